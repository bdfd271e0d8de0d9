import math

import numpy as np

from prectr.encoder.evaluate import relevance_metrics


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
