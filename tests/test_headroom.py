"""Headroom from a world's truth: the oracle bounds every ranker, and the crowd's headroom
exists only where the query carries a share of tolerance."""

import json

import numpy as np
import pyarrow as pa
import pytest

from prectr.cli import main
from prectr.data.history import HistoryIndex
from prectr.data.simulate import World, load_config, simulate
from prectr.evaluation import train_impressions
from prectr.headroom import _Truth, headroom, query_part_correlation, window_tolerance
from prectr.rankers import RANKERS


@pytest.fixture(scope="module")
def result(tiny_world):
    return headroom(tiny_world)


def test_the_oracle_beats_every_ranker_and_every_partial_oracle(tiny_world, result):
    world = World(tiny_world)
    test = world.requests(days=world.split["test"])["request_id"].combine_chunks()
    pool = world.impressions(test, ["request_id", "item_id", "logging_score", "true_relevance"])
    oracle = result["slices"]["all"]["expected_clicks"]["oracle"]
    for name, ranker in RANKERS.items():
        scores, _ = ranker(train_impressions(world), pool)
        keys = pool.select(["request_id", "item_id"])
        replayed = world.replay(keys.append_column("score", pa.array(scores))).expected_clicks
        assert oracle > replayed, name
    for name, clicks in result["slices"]["all"]["expected_clicks"].items():
        assert clicks <= oracle, name
    assert result["slices"]["all"]["click_ranking_gain"] > 0.2
    broad = result["broad"]
    assert broad["oracle"]["expected_clicks"] > broad["relevance_blind"]["expected_clicks"]
    assert broad["oracle"]["irrelevant@10"] < broad["relevance_blind"]["irrelevant@10"]


def test_the_crowd_headroom_is_about_zero_without_a_query_part_and_grows_with_it(tmp_path):
    gains = {}
    for share in (0.0, 0.9):
        out = tmp_path / f"share-{share}"
        simulate(load_config("tiny", overrides={"tolerance_query_share": share}), out)
        gains[share] = headroom(out)["slices"]["all"]
    assert abs(gains[0.0]["crowd_gain"]) < 0.003
    assert gains[0.9]["crowd_gain"] > gains[0.0]["crowd_gain"] + 0.005
    assert gains[0.9]["crowd_gain_ci"][0] > 0
    # without a query part the crowd knows no more than a query embedding, to the bit
    assert gains[0.0]["mining_gain"] == 0.0 and gains[0.0]["mining_auc_gain"] == 0.0
    assert gains[0.0]["window_gain"] == 0.0 and gains[0.0]["window_auc_gain"] == 0.0
    assert gains[0.9]["mining_auc_gain"] > 0.005
    # a window of the log's impressions tells some of the query's part, not all of it
    assert 0 < gains[0.9]["window_auc_gain"] < gains[0.9]["mining_auc_gain"]
    for share in gains:
        aucs = gains[share]["auc"]
        assert aucs["oracle"] > aucs["none"] > 0.5, share


def test_slices_partition_the_requests_by_activity(result):
    slices = result["slices"]
    assert (
        slices["cold"]["requests"] + slices["low"]["requests"]
        == (slices["cold_and_low"]["requests"])
    )
    assert 0 < slices["cold_and_low"]["requests"] < slices["all"]["requests"]
    assert np.isfinite(slices["cold"]["crowd_gain"])


def test_the_command_prints_and_writes_json(tiny_world, tmp_path, capsys):
    out = tmp_path / "headroom.json"
    with pytest.raises(SystemExit) as done:
        main(["headroom", str(tiny_world), "--out", str(out)])
    assert done.value.code == 0
    assert "crowd" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["slices"]["all"]["requests"] > 0 and written["broad"] is not None


def test_the_query_oracle_knows_what_the_training_days_taught_of_each_query(tmp_path):
    """Without drift a seen query's part never moves, so the query oracle is the crowd's; with
    drift it lags; a query no training day issued gets the training days' mean."""
    truths = {}
    for drift in (0.0, 0.5):
        out = tmp_path / f"drift-{drift}"
        overrides = {"tolerance_query_share": 0.8, "tolerance_drift": drift}
        simulate(load_config("tiny", overrides=overrides), out)
        truths[drift] = _Truth(World(out))
    still, drifting = truths[0.0], truths[0.5]
    seen = still.query_seen
    assert seen.any() and not seen.all()
    np.testing.assert_allclose(still.query_tolerance[seen], still.crowd_tolerance[seen])
    assert not np.allclose(still.query_tolerance[~seen], still.crowd_tolerance[~seen])
    assert not np.allclose(drifting.query_tolerance[drifting.query_seen],
                           drifting.crowd_tolerance[drifting.query_seen])  # fmt: skip


def test_the_unseen_query_slice_holds_the_requests_of_queries_no_training_day_issued(
    tiny_world, result
):
    world = World(tiny_world)
    trained = set(world.requests(days=world.split["train"])["query"].to_pylist())
    test = world.requests(days=world.split["test"])["query"].to_pylist()
    unseen = sum(q not in trained for q in test)
    assert result["slices"]["unseen_query"]["requests"] == unseen > 0
    assert np.isfinite(result["slices"]["all"]["mining_gain"])


def test_a_request_with_an_empty_window_keeps_what_the_training_days_taught(tmp_path):
    out = tmp_path / "drifting"
    simulate(load_config("tiny", overrides={"tolerance_query_share": 0.8}), out)
    world = World(out)
    truth = _Truth(world)
    test = world.requests(days=world.split["test"])["request_id"].to_numpy()
    windowed = window_tolerance(world, truth, test, crowd_length=5, crowd_days=0.5)
    moved = windowed[test] != truth.query_tolerance[test]
    assert moved.any() and not moved.all()
    requests = world.requests()
    log = world.impressions(None, ["request_id", "position", "click"])
    log = log.filter(log["position"].is_valid())
    crowd = (
        HistoryIndex.of_log(requests, log)
        .histories(requests.take(test), crowd_length=5, crowd_days=0.5)
        .query_crowd
    )
    empty = (crowd < 0).all(1)
    assert empty.any() and not moved[empty].any()


def test_the_window_tells_the_query_part_better_than_the_training_days_where_it_drifts(tmp_path):
    """Where a query's intent moves, a window of its crowd lands nearer the crowd's tolerance
    than what training taught; where it never moves, a seen query's window keeps the prior."""
    distance = {}
    for drift in (0.0, 0.5):
        out = tmp_path / f"drift-{drift}"
        overrides = {"tolerance_query_share": 0.8, "tolerance_drift": drift,
                     "tolerance_strength": 3.0, "n_requests": 4000}  # fmt: skip
        simulate(load_config("tiny", overrides=overrides), out)
        world = World(out)
        truth = _Truth(world)
        test = world.requests(days=world.split["test"])["request_id"].to_numpy()
        windowed = window_tolerance(world, truth, test, crowd_length=50, crowd_days=7.0)[test]
        seen = truth.query_seen[test]
        crowd, query = truth.crowd_tolerance[test], truth.query_tolerance[test]
        gap = np.abs(windowed - crowd)[seen].mean(), np.abs(query - crowd)[seen].mean()
        distance[drift] = gap
        if drift == 0.0:
            np.testing.assert_allclose(windowed[seen], query[seen], atol=1e-9)
    window, prior = distance[0.5]
    assert window < 0.95 * prior


def test_the_query_part_keeps_its_breadth_share_and_loses_its_own_with_drift():
    overrides = {"tolerance_drift": 0.5, "tolerance_breadth_weight": 0.4}
    config = load_config("tiny", overrides=overrides)
    corr = query_part_correlation(config, np.array([0, 1, 2, 100]))
    np.testing.assert_allclose(corr[:3], [1.0, 0.4 + 0.6 * 0.5**0.5, 0.4 + 0.6 * 0.5])
    assert corr[3] == pytest.approx(0.4)
    still = load_config("tiny", overrides={"tolerance_drift": 0.0})
    np.testing.assert_array_equal(query_part_correlation(still, np.arange(5)), 1.0)


@pytest.mark.parametrize("flag", ["--crowd-length=0", "--crowd-days=-1"])
def test_the_window_flags_refuse_what_is_not_positive(tiny_world, capsys, flag):
    with pytest.raises(SystemExit) as done:
        main(["headroom", str(tiny_world), flag])
    assert done.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err
