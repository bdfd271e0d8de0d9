import math

import numpy as np

from prectr.encoder.evaluate import average_ranks, relevance_metrics, spearman


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([10, 20, 10, 30])).tolist() == [1.5, 3.0, 1.5, 4.0]


def test_spearman_hand_computed_and_edge_cases() -> None:
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert math.isclose(spearman(a, b), 0.8)
    assert math.isclose(spearman(a, -a), -1.0)
    assert math.isnan(spearman(a, np.ones(4)))


def test_relevance_metrics_on_a_hand_made_pool() -> None:
    # one request, true grades 3, 0, 1; the model puts all its mass on 2, 1, 1
    probabilities = np.eye(4)[[2, 1, 1]]
    truth = np.array([3, 0, 1])
    m = relevance_metrics(probabilities, truth, np.zeros(3, np.int64))
    assert math.isclose(m["accuracy"], 1 / 3)
    # expected grades 2, 1, 1 rank the grade-3 item first; ties keep row order: 3, 0, 1
    dcg = 7 + 0 + 1 / math.log2(4)
    ideal = 7 + 1 / math.log2(3)
    assert math.isclose(m["ndcg@10"], dcg / ideal)
    assert m["pairs"] == 3 and m["requests"] == 1
