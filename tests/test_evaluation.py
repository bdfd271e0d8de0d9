import numpy as np
import pytest

from prectr.data.simulate import World
from prectr.evaluation import evaluate_scores, evaluation_pool, train_impressions
from prectr.rankers import RANKERS


@pytest.fixture(scope="module")
def results(tiny_world):
    world = World(tiny_world)
    pool, train = evaluation_pool(world), train_impressions(world)
    out = {}
    for name, ranker in RANKERS.items():
        scores, probability = ranker(train, pool)
        assert scores.shape == (pool.num_rows,) and np.isfinite(scores).all()
        out[name] = evaluate_scores(world, pool, scores, probability)
    return out


def test_the_logging_ranker_beats_random_on_every_axis(results):
    logging, random = results["logging"], results["random"]
    assert logging["auc"] > random["auc"] + 0.1
    assert logging["ndcg@10"] > random["ndcg@10"]
    assert logging["irrelevant@10"] < random["irrelevant@10"]
    assert logging["expected_clicks"] > random["expected_clicks"]
    assert abs(random["auc"] - 0.5) < 0.1


def test_popularity_gives_calibrated_probabilities(results):
    popularity = results["popularity"]
    assert 0.7 < popularity["calibration"] < 1.3
    assert popularity["logloss"] < 0.6
    assert results["logging"]["logloss"] is None  # a score, not a probability


def test_evaluating_a_run_writes_every_metric_and_recomputable_scores(tiny_run, tiny_world):
    import json

    import pyarrow.parquet as pq

    from prectr.evaluation import evaluate_run
    from prectr.metrics import auc

    result = evaluate_run(tiny_run, tiny_world)
    saved = json.loads((tiny_run / "evaluation.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"])
    for key in ("auc", "gauc_user", "gauc_request", "logloss", "calibration", "ndcg@10",
                "mean_grade@10", "irrelevant@10", "expected_clicks"):  # fmt: skip
        assert result["metrics"][key] is not None, key
    assert set(result["slices"]) == {"cold_start", "new_items", "unexposed"}
    assert result["slices"]["unexposed"]["ndcg@10"] > 0
    assert result["online"]["logging_expected_clicks"] > 0
    assert 5 <= len(result["calibration_bins"]) <= 10

    # scores.parquet covers every test-day candidate and reproduces the reported AUC
    world = World(tiny_world)
    scores = pq.read_table(tiny_run / "scores.parquet")
    pool = evaluation_pool(world, scores["request_id"].unique())
    assert scores.num_rows == pool.num_rows
    joined = pool.join(scores, ["request_id", "item_id"])
    exposed = joined.filter(joined["click"].is_valid())
    assert auc(exposed["click"].to_numpy(), exposed["score"].to_numpy()) == pytest.approx(
        result["metrics"]["auc"]
    )
