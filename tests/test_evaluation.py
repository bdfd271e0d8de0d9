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
