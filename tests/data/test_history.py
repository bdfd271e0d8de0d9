import dataclasses
import weakref

import numpy as np
import pyarrow as pa
import pytest

from prectr.data.history import (
    CROWD_CATEGORY,
    CROWD_NONE,
    CROWD_QUERY,
    HistoryIndex,
    HistoryKeys,
    last_before,
)
from prectr.data.schema import read_log


def build_histories(requests, impressions, *lengths, **crowd):
    """The histories of every request of a log, from the index of that log."""
    return HistoryIndex.of_log(requests, impressions).histories(requests, *lengths, **crowd)


def brute_force(event_key, event_time, query_key, query_time, length):
    out = np.full((query_key.size, length), -1)
    for q in range(query_key.size):
        if query_key[q] < 0:
            continue
        rows = np.flatnonzero((event_key == query_key[q]) & (event_time < query_time[q]))
        rows = rows[np.lexsort((rows, event_time[rows]))][-length:]
        out[q, length - rows.size :] = rows
    return out


def test_last_before_equals_brute_force_with_ties_in_time():
    rng = np.random.default_rng(0)
    event_key = rng.integers(-1, 6, 400)
    event_time = rng.integers(0, 30, 400)  # many events share an instant
    query_key = rng.integers(-1, 7, 300)
    query_time = rng.integers(0, 32, 300)
    for length in (1, 3, 50):
        got = last_before(event_key, event_time, query_key, query_time, length)
        assert np.array_equal(
            got, brute_force(event_key, event_time, query_key, query_time, length)
        )


def test_an_event_at_the_same_instant_is_not_history():
    got = last_before(np.array([0, 0]), np.array([5, 9]), np.array([0, 0]), np.array([9, 10]), 2)
    assert got.tolist() == [[-1, 0], [0, 1]]


@pytest.fixture(scope="module")
def log_and_histories(tiny_world):
    log = read_log(tiny_world)
    return log, build_histories(log.requests, log.impressions, 5, 8, 8)


def test_world_histories_hold_exactly_the_latest_earlier_events(log_and_histories):
    """Compared row by row with a brute force: a single future (or missing) event fails it."""
    log, h = log_and_histories
    req, imp = log.requests, log.impressions
    t = req["timestamp"].cast(pa.int64()).to_numpy()
    user = req["user_id"].to_numpy()
    row_of = {r: i for i, r in enumerate(req["request_id"].to_pylist())}
    imp_req = np.array([row_of[r] for r in imp["request_id"].to_pylist()])
    click = imp["click"].fill_null(-1).to_numpy()
    assert np.array_equal(h.user_requests, brute_force(user, t, user, t, 5))
    clicked_user = np.where(click == 1, user[imp_req], -1)
    assert np.array_equal(h.user_clicks, brute_force(clicked_user, t[imp_req], user, t, 8))
    query = np.unique(req["query"].to_numpy(zero_copy_only=False), return_inverse=True)[1]
    crowd_key = np.where(click >= 0, query[imp_req], -1)
    assert np.array_equal(h.query_crowd, brute_force(crowd_key, t[imp_req], query, t, 8))
    assert h.category_crowd is not None and h.category_crowd.shape == (req.num_rows, 8)


def test_a_user_without_history_still_gets_the_crowd(log_and_histories):
    _, h = log_and_histories
    new_user = (h.user_requests < 0).all(1)
    assert new_user.any()
    assert (h.query_crowd[new_user] >= 0).any(1).mean() > 0.3


def test_histories_never_read_evaluation_columns(log_and_histories):
    log, _ = log_and_histories
    observed = log.impressions.drop_columns(["true_relevance", "logging_score"])
    again = build_histories(log.requests, observed, 5, 8, 8)
    assert np.array_equal(again.query_crowd, log_and_histories[1].query_crowd)


def test_impressions_of_unknown_requests_are_refused(log_and_histories):
    log, _ = log_and_histories
    with pytest.raises(ValueError, match="not in the requests table"):
        build_histories(log.requests.slice(0, 10), log.impressions)


def _handmade(queries: list[str], days: list[float], categories: list[str]):
    """One exposed, clicked impression per request; request ``i`` by user ``u{i}``."""
    n = len(queries)
    requests = pa.table({
        "request_id": [f"r{i}" for i in range(n)],
        "user_id": [f"u{i}" for i in range(n)],
        "query": queries,
        "timestamp": pa.array([round(d * 86_400_000) for d in days], pa.timestamp("ms")),
        "query_category": categories,
    })  # fmt: skip
    impressions = pa.table({"request_id": [f"r{i}" for i in range(n)],
                            "click": pa.array([1] * n, pa.int8())})  # fmt: skip
    return requests, impressions


def test_the_crowd_is_the_querys_within_the_window_and_never_a_later_event():
    requests, impressions = _handmade(
        ["Red  Shoes ", "red shoes", "red shoes", "red shoes", "red shoes"],
        [0.0, 5.0, 5.5, 6.0, 9.0],  # the last request is the future of the others
        ["shoes"] * 5,
    )
    h = build_histories(requests, impressions, 5, 5, 5, crowd_days=2.0, crowd_min_events=1)
    # request 3 (day 6): requests 1 and 2 only; request 0 is 6 days old, request 4 is later
    assert h.crowd[3].tolist() == [-1, -1, -1, 1, 2]
    assert h.crowd_level[3] == CROWD_QUERY
    without_window = build_histories(requests, impressions, 5, 5, 5)
    assert without_window.crowd[1].tolist() == [-1, -1, -1, -1, 0]  # "Red  Shoes " is "red shoes"
    assert 4 not in without_window.crowd[:4]  # the planted future event is nobody's history


def test_a_rare_query_backs_off_to_its_category_then_to_none():
    requests, impressions = _handmade(
        ["boots", "boots", "sandals", "hats", "boots"],
        [0.0, 0.1, 0.2, 0.3, 0.4],
        ["shoes", "shoes", "shoes", "hats", "shoes"],
    )
    h = build_histories(requests, impressions, 5, 5, 5, crowd_min_events=2)
    # boots at 0.4 has two earlier boots events; sandals has none but shoes has two; hats has
    # neither
    assert h.crowd_level.tolist()[2:] == [CROWD_CATEGORY, CROWD_NONE, CROWD_QUERY]
    assert h.crowd[2].tolist() == [-1, -1, -1, 0, 1] and (h.crowd[3] == -1).all()
    assert h.crowd[4].tolist() == [-1, -1, -1, 0, 1]
    with pytest.raises(ValueError, match="crowd_min_events"):
        build_histories(requests, impressions, 5, 5, 5, crowd_min_events=6)


def test_the_state_keeps_a_crowds_event_while_a_later_window_can_hold_it_and_clicks_always():
    requests, impressions = _handmade(["red shoes"] * 3, [0.0, 0.5, 5.0], ["shoes"] * 3)
    unclicked = impressions.set_column(1, "click", pa.array([0] * 3, pa.int8()))
    index = HistoryIndex.of_log(requests, unclicked)
    assert (index.kept(5, 5, 5)[1] > 0).all()  # without a window, the query's last 5 events
    # a request after day 5 looks back 2 days at most: days 0 and 0.5 are out of every window
    assert (index.kept(5, 5, 5, crowd_days=2.0)[1] > 0).tolist() == [False, False, True]
    assert (index.kept(5, 5, 5, crowd_days=5.0)[1] > 0).tolist() == [True, True, True]
    assert index.events.user.dtype == index.events.query.dtype == np.int32
    state = index.remaining({"shown": np.array([10, 11, 12])}, 5, 5, 5, crowd_days=2.0)
    assert state.shown["shown"].tolist() == [12] and state.events.time.size == 1
    assert state.events.request_user.size == 3  # each user's requests stay
    clicked = HistoryIndex.of_log(requests, impressions)  # each a user's click: no window
    assert (clicked.kept(5, 5, 5, crowd_days=2.0)[1] > 0).all()


def test_a_chunk_asking_with_no_category_at_all_is_indexed():
    """A log whose query categories are all null has no category code; a chunk's requests
    asking for their histories index them as the whole log's index does."""
    requests, impressions = _handmade(["boots", "boots", "hats"], [0.0, 0.1, 0.2], [None] * 3)
    requests = requests.set_column(4, "query_category", pa.array([None] * 3, pa.string()))
    whole = HistoryIndex.of_log(requests, impressions)
    keys = HistoryKeys(requests)
    events = keys.events(requests, np.arange(3), impressions["click"])
    asked = HistoryIndex(keys, events, asking=requests).histories(requests, 5, 5, 5)
    expected = whole.histories(requests, 5, 5, 5)
    assert asked.crowd.tolist() == expected.crowd.tolist() == [[-1] * 5, [-1] * 4 + [0], [-1] * 5]
    assert asked.crowd_level.tolist() == expected.crowd_level.tolist()


def test_joining_a_state_to_a_chunk_and_keeping_a_state_spend_their_arrays():
    """A history state joined to a chunk's events, and joined events a state is kept from,
    let go of their arrays (nothing else holds them): the state is never held twice whole."""
    requests, impressions = _handmade(["red shoes"] * 3, [0.0, 0.5, 5.0], ["shoes"] * 3)
    index = HistoryIndex.of_log(requests, impressions)
    events = index.events
    state = index.remaining({"shown": np.array([10, 11, 12])}, 5, 5, 5)
    assert all(getattr(events, f.name) is None for f in dataclasses.fields(events))
    arrays = [weakref.ref(a) for a in (state.events.user, state.events.time, state.shown["shown"])]
    chunk = HistoryIndex.of_log(requests, impressions).events
    joined, shown = state.then(chunk, {"shown": np.array([20, 21, 22])})
    assert all(a() is None for a in arrays)
    assert shown["shown"].tolist() == [10, 11, 12, 20, 21, 22] and joined.user.size == 6
    assert joined.request_user.size == 6
