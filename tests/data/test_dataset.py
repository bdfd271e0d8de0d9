import numpy as np
import pyarrow as pa
import pytest
import torch

from prectr.data.dataset import (
    BatchStream,
    Collator,
    request_batch,
    time_split,
    write_impressions,
)
from prectr.data.features import FeatureEncoder
from prectr.data.schema import read_log


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
    with pytest.raises(ValueError, match="spans 1 days"):
        time_split(log.requests.slice(0, 5))


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


def test_order_is_fixed_by_seed_and_epoch(encoded_train):
    stream = _stream(encoded_train)
    a, b = _requests(stream.epoch(0)), _requests(stream.epoch(0))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = _requests(stream.epoch(1))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))
    skipped = _requests(stream.epoch(0, skip=3))
    assert all(np.array_equal(x, y) for x, y in zip(a[3:], skipped, strict=True))


def test_ranks_share_requests_out(encoded_train):
    full = np.concatenate(_requests(_stream(encoded_train, shuffle=False).epoch()))
    parts = [
        np.concatenate(_requests(_stream(encoded_train, rank=r, world_size=2).epoch()))
        for r in (0, 1)
    ]
    assert not set(parts[0].tolist()) & set(parts[1].tolist())
    assert sorted(np.concatenate(parts).tolist()) == sorted(full.tolist())


def test_the_whole_pool_can_be_read(encoded_train):
    batches = list(_stream(encoded_train, rows="all", shuffle=False).epoch())
    exposed = np.concatenate([b.exposed.numpy() for b in batches])
    assert (~exposed).sum() > exposed.sum()
    positions = np.concatenate([b.position.numpy() for b in batches])
    assert (positions[exposed] >= 1).all() and (positions[~exposed] == 0).all()


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
