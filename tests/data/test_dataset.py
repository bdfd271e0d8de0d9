import dataclasses
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from prectr.data.dataset import Collator, request_batch
from prectr.data.features import FeatureEncoder
from prectr.data.schema import read_log
from prectr.data.shards import (
    ShardWriter,
    shard_paths,
    shards_of,
    time_split,
    write_impressions,
)
from prectr.data.simulate import World, split_days
from prectr.data.stream import BatchStream


@pytest.fixture(scope="module")
def encoded_train(tiny_world, tmp_path_factory):
    log = read_log(tiny_world)
    split = time_split(log.requests)
    encoded = FeatureEncoder().fit(log, split["train"]).encode(log)
    rows = encoded.impressions["request_row"].to_numpy()
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    write_impressions(encoded.impressions.filter(pa.array(np.isin(rows, split["train"]))), path)
    return path, Collator(encoded), split


def test_time_split_holds_out_the_last_days(tiny_world):
    log = read_log(tiny_world)
    split = time_split(log.requests)
    t = log.requests["timestamp"].cast(pa.int64()).to_numpy()
    assert (
        t[split["train"]].max()
        < t[split["valid"]].min()
        <= t[split["valid"]].max()
        < t[split["test"]].min()
    )
    assert sum(v.size for v in split.values()) == log.requests.num_rows
    with pytest.raises(ValueError, match="spans 1 day;"):
        time_split(log.requests.slice(0, 5))


def test_the_simulator_splits_its_days_as_a_log_is_split(tiny_world):
    """One rule: the days the simulator calls validation and test (for its broad samples and
    its world.json) are those time_split gives the log it wrote, with 3 test days too."""
    log = read_log(tiny_world)
    world = World(tiny_world)
    day = world.day_of(log.requests["timestamp"]).to_numpy()
    for valid_days, test_days in ((1, 1), (1, 3), (2, 2)):
        config = dataclasses.replace(world.config, valid_days=valid_days, test_days=test_days)
        split = time_split(log.requests, valid_days, test_days)
        for name, days in split_days(config).items():
            assert sorted(set(day[split[name]].tolist())) == days
    assert split_days(world.config) == world.split


def _stream(encoded_train, **kwargs):
    path, collator, _ = encoded_train
    return BatchStream(path, collator, **{"batch_size": 300, "buffer_rows": 1000, **kwargs})


def _requests(batches):
    return [b.request.numpy() for b in batches]


def test_an_epoch_covers_every_exposed_row_once_and_keeps_requests_whole(encoded_train):
    batches = list(_stream(encoded_train).epoch(0))
    seen = np.concatenate(_requests(batches))
    per_batch = [set(r.tolist()) for r in _requests(batches)]
    assert all(not (a & b) for i, a in enumerate(per_batch) for b in per_batch[i + 1 :])
    assert all(b.exposed.all() for b in batches)
    _, _, split = encoded_train
    assert set(seen.tolist()) <= set(split["train"].tolist())
    assert np.bincount(seen).max() == 10  # each request's 10 exposed rows, once
    assert all(300 <= len(b) < 300 + 10 for b in batches[:-1])  # cut at a request end
    assert 300 <= len(batches[-1]) < 2 * 300 + 10  # the remainder joins the last batch


def test_a_batch_names_its_requests_first_rows_and_each_rows_request(encoded_train):
    batch = next(iter(_stream(encoded_train).epoch(0)))
    first, owner = batch.requests()
    assert torch.equal(batch.request[first], torch.unique_consecutive(batch.request))
    assert torch.equal(batch.request[first][owner], batch.request)
    assert torch.equal(owner, torch.sort(owner).values)  # each request in consecutive rows
    for name, ids in batch.sequences.items():  # request-level features are one per request
        if name.startswith("user_click"):
            assert torch.equal(ids[first][owner], ids)


def test_order_is_fixed_by_seed_and_epoch(encoded_train):
    stream = _stream(encoded_train)
    a, b = _requests(stream.epoch(0)), _requests(stream.epoch(0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = _requests(stream.epoch(1))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))
    batches = stream.epoch(0)
    for _ in range(3):
        next(batches)
    resumed = _requests(stream.epoch(0, start=dict(stream.position)))
    assert all(np.array_equal(x, y) for x, y in zip(a[3:], resumed, strict=True))


def test_prefetching_gives_the_same_batches_and_positions(encoded_train):
    stream, ahead = _stream(encoded_train), _stream(encoded_train)
    plain, early = stream.epoch(3), ahead.epoch(3, prefetch=2)
    for a, b in zip(plain, early, strict=True):
        assert np.array_equal(a.request.numpy(), b.request.numpy())
        assert stream.position == ahead.position  # the consumer's, not the thread's


def test_a_consumer_that_stops_early_waits_for_the_thread_to_end(encoded_train, monkeypatch):
    stream = _stream(encoded_train)
    collate = stream.collator

    def slow(*args):  # the thread is busy in a batch when the consumer stops
        time.sleep(0.2)
        return collate(*args)

    monkeypatch.setattr(stream, "collator", slow)
    early = stream.epoch(3, prefetch=2)
    next(early)
    early.close()
    # ended, not left to be killed at exit inside pyarrow or torch (which aborts the process)
    assert not [t for t in threading.enumerate() if t.name == "prectr-prefetch"]


def test_an_error_while_prefetching_reaches_the_consumer(encoded_train, monkeypatch):
    stream = _stream(encoded_train)

    def broken(*args):
        raise OSError("shard unreadable")

    monkeypatch.setattr(stream, "collator", broken)
    with pytest.raises(OSError, match="shard unreadable"):
        next(stream.epoch(0, prefetch=2))


def write_shards(table: pa.Table, directory: Path, shards: int) -> list[str]:
    """``table`` written at once as ``shards`` shard files in ``directory``."""
    with ShardWriter({"": str(directory)}, shards) as writer:
        writer.add(table.sort_by([("request_row", "ascending")]), np.zeros(table.num_rows, int))
    return writer.paths[""]


@pytest.fixture(scope="module")
def shards(encoded_train, tmp_path_factory):
    path, collator, _ = encoded_train
    table = pq.read_table(path)
    return write_shards(table, tmp_path_factory.mktemp("shards"), 4), collator, table


def test_shards_hold_whole_requests_once(shards):
    paths, _, table = shards
    assert shard_paths(Path(paths[0]).parent) == paths
    parts = [pq.read_table(p)["request_row"].to_numpy() for p in paths]
    assert all(np.all(np.diff(p) >= 0) for p in parts)  # sorted by request
    owners = [set(p.tolist()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert sorted(np.concatenate(parts).tolist()) == sorted(table["request_row"].to_pylist())
    assert shards_of(paths, 1, 2) == [paths[1], paths[3]]
    with pytest.raises(ValueError, match="5 processes but 4 shards"):
        shards_of(paths, 0, 5)
    with pytest.raises(FileNotFoundError, match="no shard files"):
        shard_paths(Path(paths[0]).parent / "missing")
    with pytest.raises(FileExistsError, match="holds shard files"):  # they would mix
        write_shards(table, Path(paths[0]).parent, 2)


def test_shards_written_part_by_part_are_the_shards_written_at_once(shards, tmp_path):
    """A ShardWriter fed a table in parts writes the same files, row groups included; parts
    out of request order are refused and leave no shard behind."""
    paths, _, table = shards
    table = table.sort_by([("request_row", "ascending")])
    rows = table["request_row"].to_numpy()
    cuts = [0, *np.flatnonzero(np.diff(rows))[::50] + 1, rows.size]
    with ShardWriter({"train": str(tmp_path / "train")}, 4) as writer:
        for a, b in itertools.pairwise(cuts):
            writer.add(table.slice(a, b - a), np.zeros(b - a, int))
    for ours, theirs in zip(writer.paths["train"], paths, strict=True):
        assert pq.read_table(ours).equals(pq.read_table(theirs))
        assert pq.ParquetFile(ours).metadata.num_row_groups == pq.ParquetFile(
            theirs).metadata.num_row_groups  # fmt: skip
    out_of_order = ShardWriter({"x": str(tmp_path / "x")}, 2)
    with pytest.raises(ValueError, match="request order"), out_of_order as writer:
        writer.add(table.slice(1000), np.zeros(table.num_rows - 1000, int))
        writer.add(table.slice(0, 1000), np.zeros(1000, int))
    assert not list((tmp_path / "x").glob("*"))


def test_a_split_finished_early_writes_the_files_of_one_finished_at_the_end(shards, tmp_path):
    """Rows of a split finished as soon as the next split starts (a time split) are written
    then, not held; the files are the same, and a row of a finished split is refused."""
    _, _, table = shards
    table = table.sort_by([("request_row", "ascending")])
    rows = table["request_row"].to_numpy()
    split = (rows >= np.median(rows)).astype(int)  # two splits, one after the other
    cuts = [0, *np.flatnonzero(np.diff(rows))[::50] + 1, rows.size]
    written = {}
    for early in (False, True):
        directories = {name: str(tmp_path / f"{early}" / name) for name in ("a", "b")}
        with ShardWriter(directories, 3) as writer:
            for start, end in itertools.pairwise(cuts):
                writer.add(table.slice(start, end - start), split[start:end])
                if early and split[end - 1] == 1:
                    writer.finish(0)
                    assert all(not held for held in writer.pending[:3])
        written[early] = [p for name in ("a", "b") for p in writer.paths[name]]
        if early:
            with pytest.raises(ValueError, match="split 0 after it was finished"):
                writer.add(table.slice(rows.size - 1), np.zeros(1, int))
    for ours, theirs in zip(written[True], written[False], strict=True):
        assert pq.read_table(ours).equals(pq.read_table(theirs))
        assert pq.ParquetFile(ours).metadata.num_row_groups == pq.ParquetFile(
            theirs).metadata.num_row_groups  # fmt: skip


def test_no_shard_ends_an_epoch_with_a_short_batch(shards):
    """One short batch per shard would make the epoch's last steps its noisiest."""
    paths, collator, _ = shards
    batches = list(BatchStream(paths, collator, 300, buffer_rows=700).epoch(0))
    assert len(batches) > 2 * len(paths)
    assert all(len(b) >= 300 for b in batches)


@pytest.mark.parametrize("world", [1, 2])
def test_an_epoch_is_one_pass_through_time_whatever_the_processes(shards, world):
    """Shards are read side by side, so the log's time order (request rows grow with time)
    is walked once, not once per shard."""
    paths, collator, _ = shards
    stream = BatchStream(shards_of(paths, 0, world), collator, 100, buffer_rows=700)
    means = np.array([b.request.float().mean().item() for b in stream.epoch(0)])
    rank_correlation = np.corrcoef(np.arange(means.size), means.argsort().argsort())[0, 1]
    assert rank_correlation > 0.9  # shard after shard would give a saw (about 0.25 here)


def _rows(batches) -> list[tuple[int, int]]:
    pairs = (zip(b.request.tolist(), b.item.tolist(), strict=True) for b in batches)
    return [pair for batch in pairs for pair in batch]


def test_a_resume_with_other_processes_reads_each_remaining_row_once(shards):
    """Two processes read 5 batches each, then three processes resume from their positions:
    together they read every row of the epoch exactly once."""
    paths, collator, table = shards

    def stream(rank, world, batch_size):
        return BatchStream(shards_of(paths, rank, world), collator, batch_size, buffer_rows=700)

    before, position = [], {}
    for rank in range(2):
        s = stream(rank, 2, 150)
        batches = s.epoch(0)
        before += _rows(next(batches) for _ in range(5))
        position.update(s.position)
    after = [_rows(stream(rank, 3, 100).epoch(0, start=position)) for rank in range(3)]
    seen = before + [row for part in after for row in part]
    exposed = table.filter(pc.is_valid(table["click"]))
    expected = list(
        zip(exposed["request_row"].to_pylist(), exposed["item_row"].to_pylist(), strict=True)
    )
    assert len(seen) == len(set(seen)) and sorted(seen) == sorted(expected)


def test_the_whole_pool_can_be_read(encoded_train):
    batches = list(_stream(encoded_train, rows="all", shuffle=False).epoch())
    exposed = np.concatenate([b.exposed.numpy() for b in batches])
    assert (~exposed).sum() > exposed.sum()
    positions = np.concatenate([b.position.numpy() for b in batches])
    assert (positions[exposed] >= 1).all() and (positions[~exposed] == 0).all()


def test_a_batch_can_count_its_exposed_impressions_alone(encoded_train):
    """With ``counts="exposed"`` a stream of every candidate cuts each batch at the first
    request end at or after ``batch_size`` exposed impressions, as a stream of exposed rows
    cuts at ``batch_size`` rows: the same requests, batch for batch."""
    every = list(_stream(encoded_train, rows="all", shuffle=False, counts="exposed").epoch())
    shown = list(_stream(encoded_train, shuffle=False).epoch())
    assert [np.unique(b.request.numpy()).tolist() for b in every] == [
        np.unique(b.request.numpy()).tolist() for b in shown
    ]
    assert all(300 <= int(b.exposed.sum()) < 300 + 10 for b in every[:-1])
    assert all(len(b) > 2 * int(b.exposed.sum()) for b in every)  # every candidate is there
    by_rows = list(_stream(encoded_train, rows="all", shuffle=False).epoch())
    assert len(by_rows) > 2 * len(every)
    with pytest.raises(ValueError, match="counts 'candidates'"):
        _stream(encoded_train, counts="candidates")


def test_labelled_unexposed_rows_can_join_the_exposed_ones(encoded_train):
    batches = list(_stream(encoded_train, rows="exposed_or_labelled").epoch(0))
    exposed = np.concatenate([b.exposed.numpy() for b in batches])
    labelled = np.concatenate([b.relevance.numpy() for b in batches]) >= 0
    assert (~exposed).any() and labelled[~exposed].all()
    with pytest.raises(ValueError, match="rows 'some'"):
        _stream(encoded_train, rows="some")


def test_one_request_batch_holds_what_the_collator_gathers(tiny_world):
    """Serving's batch of one request: its ids and numerics broadcast to every candidate, its
    sequences as one row, every item- and pair-level feature as the Collator gathers it."""
    log = read_log(tiny_world)
    split = time_split(log.requests)
    encoded = FeatureEncoder().fit(log, split["train"]).encode(log)
    rows = encoded.impressions["request_row"].to_numpy()
    one = np.flatnonzero(rows == rows[-1])
    table = encoded.impressions.take(one).drop_columns(["request_id", "item_id"])
    columns = {k: table[k].to_numpy(zero_copy_only=False) for k in table.column_names}
    want = Collator(encoded)(columns)
    item_rows = columns["item_row"]
    request = {k: v[rows[-1] : rows[-1] + 1] for k, v in encoded.request.items()}
    items = {k: v[item_rows] for k, v in encoded.item.items()}
    pairs = {s.name: columns[s.name] for s in encoded.specs if s.level == "impression"}
    got = request_batch(encoded.specs, request, items, pairs)
    assert torch.equal(got.categorical, want.categorical)
    assert torch.equal(got.numeric, want.numeric)
    for spec in encoded.specs:
        if spec.name in want.sequences:
            expected = want.sequences[spec.name]
            if spec.level == "request":  # one row for the request, the same on every row
                assert got.sequences[spec.name].shape[0] == 1
                expected = expected[:1]
            assert torch.equal(got.sequences[spec.name], expected)
    assert not got.exposed.any() and (got.relevance == -1).all() and len(got) == one.size
    # its histories are read as the one row they are; the collated batch's once per request
    assert got.request_groups() is None and len(got) > 1
    first, owner = want.request_groups()
    assert first.tolist() == [0] and owner.tolist() == [0] * len(want)
    assert want.take(torch.tensor([0])).request_groups() is None  # one row: read as it is


def test_a_collated_batch_is_read_by_request(encoded_train):
    """A batch of several requests: each run of a request's rows starts a group, and each row
    belongs to its run's."""
    batch = next(iter(_stream(encoded_train, rows="all").epoch(0)))
    first, owner = batch.request_groups()
    request = batch.request.tolist()
    assert len(first) > 1 and first.tolist() == [
        i for i in range(len(batch)) if i == 0 or request[i] != request[i - 1]
    ]
    assert [request[first[o]] for o in owner.tolist()] == request
    assert owner.tolist() == sorted(owner.tolist())


def test_a_batch_takes_rows_of_every_field_and_keeps_the_step_counts(encoded_train):
    batch = next(iter(_stream(encoded_train, rows="all").epoch(0)))
    batch = dataclasses.replace(batch, step_rows={"exposed": 7.0})
    rows = torch.tensor([0, 3, 4, 10])
    taken = batch.take(rows)
    for field in dataclasses.fields(batch):
        value, got = getattr(batch, field.name), getattr(taken, field.name)
        if field.name == "sequences":
            assert got.keys() == value.keys()
            assert all(torch.equal(got[k], v[rows]) for k, v in value.items())
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got, value[rows]), field.name
    assert taken.step_rows == {"exposed": 7.0} and len(taken) == 4
