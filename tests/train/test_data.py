"""prepare in chunks: the same encoded log whatever the chunk size, and histories that never
reach across a chunk boundary into the future."""

import dataclasses
import datetime as dt
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.config import experiment_from_dict
from prectr.data.chunks import LogChunks
from prectr.data.features import PAD
from prectr.data.history import HistoryIndex, HistoryState
from prectr.data.simulate import load_config, simulate
from prectr.train.data import (
    SPLITS,
    ChunkEngine,
    encode_in_turn,
    fit_features,
    load_prepared,
    open_run,
)
from tests.conftest import tiny_config


def _prepare(
    world: Path, run: Path, chunk_rows: int, test_days: int = 3,
    engine: ChunkEngine = encode_in_turn,
) -> Path:  # fmt: skip
    config = experiment_from_dict({
        "model": "prectr_v2", "name": "chunks",
        "features": {"relevance_context": True},
        "data": {"log": str(world), "test_days": test_days, "chunk_rows": chunk_rows},
        "train": {"relevance_epochs": 1},
    })  # fmt: skip
    open_run(config, run, engine=engine)
    return run


def _same_prepared(a: Path, b: Path) -> None:
    with np.load(a / "data" / "features.npz") as x, np.load(b / "data" / "features.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key
    first, second = load_prepared(a), load_prepared(b)
    for split in SPLITS:
        assert len(first.shards[split]) == len(second.shards[split])
        for p, q in zip(first.shards[split], second.shards[split], strict=True):
            assert pq.read_table(p).equals(pq.read_table(q)), (split, p)
            assert (pq.ParquetFile(p).metadata.num_row_groups
                    == pq.ParquetFile(q).metadata.num_row_groups)  # fmt: skip


def test_prepare_in_small_chunks_writes_what_one_chunk_writes(tiny_world, tmp_path):
    many = _prepare(tiny_world, tmp_path / "many", chunk_rows=3_000)
    one = _prepare(tiny_world, tmp_path / "one", chunk_rows=10**9)
    _same_prepared(many, one)


@pytest.mark.slow
def test_prepare_in_chunks_writes_what_one_chunk_writes_on_small(tmp_path):
    world = tmp_path / "small"
    simulate(load_config("small"), world)
    many = _prepare(world, tmp_path / "many", chunk_rows=200_000)
    one = _prepare(world, tmp_path / "one", chunk_rows=10**9)
    _same_prepared(many, one)


def test_a_future_click_in_a_later_chunk_never_reaches_an_earlier_history(tiny_world, tmp_path):
    assert_no_future_event_leaks(tiny_world, tmp_path, encode_in_turn)


def assert_no_future_event_leaks(tiny_world: Path, tmp_path: Path, engine: ChunkEngine) -> None:
    """A click planted on a late day, under the log's most frequent query by its most active
    user, in a later chunk (and log file) than their earlier requests, shows in the user's
    clicks and in the query's crowd of the request just after it, and in no history before it
    (the item is never exposed otherwise, so no other event puts it in a history)."""
    log = tmp_path / "log"
    (log / "impressions").mkdir(parents=True)
    items = pq.read_table(tiny_world / "items.parquet")
    requests = pq.read_table(tiny_world / "requests.parquet")
    impressions = pq.read_table(tiny_world / "impressions")
    pq.write_table(items, log / "items.parquet")
    user = pc.mode(requests["user_id"])[0]["mode"].as_py()  # the most active user
    counts = pc.value_counts(requests["query"]).flatten()
    query = counts[0][pc.index(counts[1], pc.max(counts[1])).as_py()].as_py()
    category = requests.filter(pc.equal(requests["query"], query))["query_category"][0].as_py()
    exposed = set(impressions.filter(pc.is_valid(impressions["position"]))["item_id"].to_pylist())
    train_items = impressions["item_id"].slice(0, 20_000).unique().to_pylist()
    planted_item = next(i for i in train_items if i not in exposed)
    end = pc.max(requests["timestamp"]).as_py()
    planted, after = end - dt.timedelta(hours=2), end - dt.timedelta(hours=1)
    next_id = pc.max(requests["request_id"]).as_py() + 1
    extra = pa.table({
        "request_id": [next_id, next_id + 1], "user_id": [user, user],
        "query": [query, query], "timestamp": pa.array([planted, after], pa.timestamp("ms")),
        "query_category": [category, category],
    }, schema=requests.schema)  # fmt: skip
    pq.write_table(pa.concat_tables([requests, extra]), log / "requests.parquet")
    plant = pa.table({
        "request_id": [next_id, next_id + 1], "item_id": [planted_item, planted_item],
        "position": pa.array([1, None], pa.int32()), "click": pa.array([1, None], pa.int8()),
    })  # fmt: skip
    pq.write_table(impressions, log / "impressions" / "part-00000.parquet")
    pq.write_table(plant, log / "impressions" / "part-00001.parquet")
    run = _prepare(log, tmp_path / "run", chunk_rows=2_000, engine=engine)
    data = load_prepared(run)
    item_id = data.encoder.vocabs["item"].lookup(pa.array([planted_item]))[0]
    assert item_id > 1  # a known item: its id in a history would show
    prepared_requests = pa.concat_tables([requests, extra]).sort_by("timestamp")
    before = prepared_requests["timestamp"].to_numpy() <= np.datetime64(planted)
    own = prepared_requests["user_id"].to_numpy() == user
    under = prepared_requests["query"].to_numpy(zero_copy_only=False) == query
    clicks, crowd = data.encoded.request["user_clicks"], data.encoded.request["crowd_items"]
    assert (before & own).sum() > 10 and (before & under).sum() > 10
    assert not (clicks[before] == item_id).any() and not (crowd[before] == item_id).any()
    assert (clicks[before & own] != PAD).any() and (crowd[before & under] != PAD).any()
    following = np.flatnonzero(prepared_requests["request_id"].to_numpy() == next_id + 1)
    assert (clicks[following] == item_id).any() and (crowd[following] == item_id).any()


def test_encoding_in_turn_holds_no_state_before_a_chunk_while_indexing_it(tiny_world, monkeypatch):
    """Each chunk's state before it is copied into the chunk's events, then let go: when the
    chunk's events are indexed, no earlier state is alive (at most two copies at once)."""
    states: list[weakref.ref] = []
    alive: list[int] = []
    then, index = HistoryState.then, HistoryIndex.__init__

    def noted_then(self, *args):
        states.append(weakref.ref(self))
        return then(self, *args)

    def noted_index(self, *args):
        alive.append(sum(s() is not None for s in states))
        index(self, *args)

    monkeypatch.setattr(HistoryState, "then", noted_then)
    monkeypatch.setattr(HistoryIndex, "__init__", noted_index)
    config = tiny_config(tiny_world)
    with LogChunks(tiny_world, chunk_rows=20_000) as log:
        encoder = fit_features(config, log)
        for _ in encode_in_turn(encoder, encoder.context(log.items, log.request_rows()), log):
            pass
    assert len(alive) == log.chunks > 3 and alive == [0] * log.chunks


def test_a_chunk_that_indexes_its_own_keys_only_leaves_the_state_a_whole_index_leaves(
    tiny_world,
):
    """A chunk's index holds only the events of its requests' users, queries and categories,
    and carries the other events over: the state after each chunk is the one an index of all
    the events (the state before and the chunk) leaves, event for event, in the same order and
    the same histories (the driver's fold on Ray indexes all)."""
    config = tiny_config(tiny_world)
    with LogChunks(tiny_world, chunk_rows=20_000) as log:
        encoder = fit_features(config, log)
        context = encoder.context(log.items, log.request_parts())
        lengths = [encoder.history_options[k] for k in
                   ("user_length", "click_length", "crowd_length", "crowd_days")]  # fmt: skip
        state, whole = HistoryState.start(context.keys), HistoryState.start(context.keys)
        for requests, impressions in log:
            _, columns, shown = encoder._pairs(context.item, context.items, requests, impressions)
            events = context.keys.events(requests, columns["request_row"], impressions["click"])
            events, shown = whole.then(events, shown)
            whole = HistoryIndex(context.keys, events).remaining(shown, *lengths)
            state = encoder.encode_chunk(context, state, requests, impressions).state
            for f in dataclasses.fields(state.events):
                a, b = getattr(state.events, f.name), getattr(whole.events, f.name)
                assert (a is None and b is None) or np.array_equal(a, b), f.name
            assert state.shown.keys() == whole.shown.keys()
            assert all(np.array_equal(state.shown[k], whole.shown[k]) for k in state.shown)
        assert log.chunks > 3 and whole.events.time.size > 0


def test_preparing_takes_arrow_buffers_from_the_system_allocator_then_restores_its_own(
    tiny_world, tmp_path, monkeypatch
):
    """mimalloc keeps what it frees: while the log is filed and encoded, arrow allocates from
    the system allocator, which hands freed buffers back; the process's allocator returns after."""
    pools: list[str] = []
    scan, encode = LogChunks._scan, encode_in_turn

    def noted_scan(self):
        pools.append(pa.default_memory_pool().backend_name)
        return scan(self)

    def noted_engine(*args):
        pools.append(pa.default_memory_pool().backend_name)
        yield from encode(*args)

    monkeypatch.setattr(LogChunks, "_scan", noted_scan)
    own = pa.default_memory_pool().backend_name
    _prepare(tiny_world, tmp_path / "run", chunk_rows=20_000, engine=noted_engine)
    assert pools == ["system", "system"] and pa.default_memory_pool().backend_name == own
