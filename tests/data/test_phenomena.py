"""The phenomena the new world knobs add, each recomputed from the written tables and truth/.

Query-level tolerance (and its drift), new queries (the long tail's unseen part), supply
turnover, the cascade's broad set and the label scope.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.data.schema import read_log
from prectr.data.simulate import World, load_config, simulate
from prectr.data.simulate.catalogue import true_grade
from prectr.data.simulate.state import WorldState, stream_rng


def _truth(root: Path, table: str) -> pa.Table:
    return pq.read_table(root / "truth" / f"{table}.parquet")


def _share_of_query(root: Path) -> float:
    requests = _truth(root, "requests")
    users = _truth(root, "users")
    user = read_log(root).requests["user_id"].to_numpy()
    query_part = requests["query_tolerance"].to_numpy()
    user_part = users["user_tolerance"].to_numpy()[user]
    return query_part.var() / (query_part.var() + user_part.var())


@pytest.fixture(scope="module")
def no_query_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "no-query"
    simulate(load_config("tiny", overrides={"tolerance_query_share": 0.0}), out)
    return out


def test_the_query_holds_its_knob_share_of_tolerance_and_none_when_off(tiny_world, no_query_world):
    assert _share_of_query(tiny_world) == pytest.approx(
        load_config("tiny").tolerance_query_share, abs=0.1
    )
    assert _share_of_query(no_query_world) == 0.0


def test_broad_queries_tolerate_more_than_specific_ones(tiny_world):
    queries = _truth(tiny_world, "queries")
    requests = _truth(tiny_world, "requests")
    stated = queries["stated"].to_numpy()[requests["query_index"].to_numpy()]
    part = requests["query_tolerance"].to_numpy()
    assert part[stated == 0].mean() > part[stated >= 2].mean() + 0.1


def test_a_query_s_tolerance_drifts_but_stays_close_from_one_day_to_the_next(tmp_path):
    config = load_config("tiny", overrides={"tolerance_drift": 0.3, "n_requests": 300})
    state = WorldState.build(config)
    from prectr.data.simulate.population import query_tolerance

    part = query_tolerance(
        config, stream_rng(0, "drift"), state.queries.stated, state.population.tolerance
    )
    next_day = np.corrcoef(part[:, 0], part[:, 1])[0, 1]
    last_day = np.corrcoef(part[:, 0], part[:, -1])[0, 1]
    assert 0.6 < next_day < 0.99 and last_day < next_day - 0.1


def test_a_share_of_test_requests_carries_a_query_never_seen_in_training(tiny_world):
    world = World(tiny_world)
    train = set(world.requests(days=world.split["train"])["query"].to_pylist())
    test = world.requests(days=world.split["test"])["query"].to_pylist()
    unseen = np.mean([q not in train for q in test])
    assert unseen >= 0.10
    born = _truth(tiny_world, "queries")["birth_day"].to_numpy()
    requests = _truth(tiny_world, "requests")
    day = requests["day"].to_numpy()
    first = born[requests["query_index"].to_numpy()]
    assert np.all(first <= day)  # no query is issued before the day it first appears
    assert (first == day)[day > 0].mean() > 0.5 * load_config("tiny").new_query_share


def test_items_are_retrieved_only_while_listed(tiny_world):
    world = World(tiny_world)
    items = _truth(tiny_world, "items")
    launch, end = items["launch_day"].to_numpy(), items["end_day"].to_numpy()
    assert (end < load_config("tiny").n_days).mean() > 0.5  # most listings sell within the log
    requests = world.requests()
    day = world.day_of(requests["timestamp"]).to_numpy()
    pool = world.impressions(columns=["request_id", "item_id"])
    item, when = pool["item_id"].to_numpy(), day[pool["request_id"].to_numpy()]
    assert np.all((launch[item] <= when) & (when < end[item]))


def test_the_broad_sample_is_kept_for_evaluation_days_with_true_grades(tiny_world):
    config = load_config("tiny")
    world = World(tiny_world)
    broad = world.broad()
    per_request = np.bincount(broad["request_id"].to_numpy())
    kept = np.flatnonzero(per_request)
    assert np.all(per_request[kept] == config.broad_sample)
    day = world.day_of(world.requests()["timestamp"]).to_numpy()
    evaluation_days = world.split["valid"] + world.split["test"]
    assert set(day[kept]) == set(evaluation_days)
    assert kept.size == config.broad_requests * len(evaluation_days)
    state = WorldState.build(config)
    query = _truth(tiny_world, "requests")["query_index"].to_numpy()
    grade = true_grade(
        state.catalogue, state.queries, query[broad["request_id"].to_numpy()],
        broad["item_id"].to_numpy(),
    )  # fmt: skip
    assert np.array_equal(grade, broad["true_relevance"].to_numpy())
    # most of the broad set is never logged
    logged = world.impressions(pa.array(kept), ["request_id", "item_id"])
    both = broad.join(logged, ["request_id", "item_id"], join_type="inner")
    assert both.num_rows < 0.5 * broad.num_rows


def test_replay_ranks_the_broad_sample_and_rewards_relevance_there(tiny_world):
    world = World(tiny_world)
    broad = world.broad()
    keys = broad.select(["request_id", "item_id"])
    rng = np.random.default_rng(0)
    oracle = world.replay(
        keys.append_column("score", broad["true_relevance"].cast(pa.float64())),
        candidates="broad",
    )
    shuffled = world.replay(
        keys.append_column("score", pa.array(rng.random(broad.num_rows))), candidates="broad"
    )
    assert oracle.expected_clicks > 2 * shuffled.expected_clicks
    with pytest.raises(ValueError, match="scores miss"):
        world.replay(keys.slice(0, 10).append_column("score", pa.array(np.zeros(10))),
                     candidates="broad")  # fmt: skip


@pytest.mark.parametrize("scope", ["exposed", "broad"])
def test_label_scope_decides_which_pairs_are_graded(tmp_path, scope):
    out = tmp_path / scope
    simulate(load_config("tiny", overrides={"label_scope": scope, "n_requests": 400}), out)
    imp = read_log(out).impressions
    graded = imp.filter(imp["relevance"].is_valid())
    exposed = graded["position"].is_valid()
    if scope == "exposed":
        assert pc.all(exposed).as_py()
    else:
        base = read_log(Path(out)).impressions.num_rows
        assert (~exposed.to_numpy(zero_copy_only=False)).sum() > 0
        world = World(out)
        evaluation = world.requests(days=world.split["valid"] + world.split["test"])
        pool = world.impressions(evaluation["request_id"].combine_chunks(), ["request_id"])
        assert np.all(np.bincount(pool["request_id"].to_numpy())[
            evaluation["request_id"].to_numpy()] == load_config("tiny").pool_size)  # fmt: skip
        assert base > 400 * load_config("tiny").pool_size  # graded broad pairs joined the log
