"""Where the evaluation takes its truth from: a plain log's clicks and human grades, or a
world's."""

import numpy as np
import pyarrow as pa

from prectr.data.schema import SearchLog, conform, read_log
from prectr.evaluation.statistics import EvaluationRows, relevance_statistics, values
from prectr.evaluation.truth import LogTruth, WorldTruth, open_truth


def plain_log() -> SearchLog:
    """Two requests; the first has a human grade, a teacher's grade and an ungraded candidate."""
    items = pa.table({"item_id": [1, 2, 3], "title": ["a", "b", "c"], "category": ["x"] * 3,
                      "brand": ["b"] * 3, "price": [1.0] * 3})  # fmt: skip
    requests = pa.table(
        {
            "request_id": [10, 11],
            "user_id": [7, 8],
            "query": ["q", "q"],
            "timestamp": pa.array([0, 1000], pa.timestamp("ms")),
        }
    )
    impressions = pa.table(
        {
            "request_id": [10, 10, 10, 11],
            "item_id": [3, 1, 2, 1],
            "position": pa.array([2, 1, None, 1], pa.int32()),
            "click": pa.array([0, 1, None, 0], pa.int8()),
            "relevance": pa.array([3, 1, None, 2], pa.int8()),
            "relevance_source": ["human", "teacher", None, "human"],
        }
    )
    return conform(SearchLog(items, requests, impressions))


def test_a_plain_log_grades_only_its_human_judgments_and_keeps_the_logged_order(tmp_path):
    truth = open_truth(plain_log(), tmp_path)
    assert isinstance(truth, LogTruth) and truth.source == "log"
    pool = truth.pool(pa.array([10, 11]))
    assert pool["item_id"].to_pylist() == [1, 2, 3, 1]  # by request, then item
    assert pool["grade"].to_pylist() == [None, None, 3, 2]  # the teacher's grade is no truth
    assert pool["user_id"].to_pylist() == [7, 7, 7, 8]
    score = pool["logging_score"].to_numpy()
    assert score[0] > score[2] > score[1]  # position 1, position 2, then the unexposed one
    assert truth.replay(pool.select(["request_id", "item_id"])) is None
    assert truth.broad(pa.array([10]))[0] is None
    assert "online" in truth.unmeasured()


def test_relevance_metrics_rank_each_requests_graded_candidates_among_themselves():
    pool = pa.table(
        {
            "request_id": [1, 1, 1, 2, 2],
            "item_id": [1, 2, 3, 1, 2],
            "user_id": [0] * 5,
            "click": pa.array([1, 0, None, 0, 0], pa.int8()),
            "grade": pa.array([None, 0, 3, None, None], pa.int8()),
        }
    )
    rows = EvaluationRows.from_pool(pool)
    assert rows.graded.tolist() == [False, True, True, False, False]
    # the ungraded candidate ranked first does not count against the exact one ranked second
    score = np.array([3.0, 1.0, 2.0, 1.0, 0.0])
    stats = values(relevance_statistics(rows, score, np.ones(5, bool)), rows.n_requests)
    assert stats["ndcg@10"] == 1.0 and stats["irrelevant@10"] == 0.5
    # request 2 has no graded candidate: it is not averaged in
    swapped = values(relevance_statistics(rows, -score, np.ones(5, bool)), rows.n_requests)
    assert swapped["ndcg@10"] < 1.0 and swapped["irrelevant@10"] == 0.5


def test_a_world_is_its_own_truth_with_every_grade(tiny_world):
    truth = open_truth(read_log(tiny_world, validate_log=False), tiny_world)
    assert isinstance(truth, WorldTruth) and truth.unmeasured() == {}
    ids = truth.log.requests["request_id"].slice(0, 5).combine_chunks()
    pool = truth.pool(ids)
    assert pool["grade"].null_count == 0
    assert set(pool["request_id"].to_pylist()) == set(ids.to_pylist())
