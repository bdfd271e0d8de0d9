import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from prectr.encoder.evaluate import (
    degenerate_metrics,
    evaluate_held_out,
    held_out_metrics,
    held_out_sample,
    write_predictions,
)
from prectr.encoder.student import load_student
from prectr.encoder.teacher import evaluate_teacher
from tests.encoder.teacher_models import CountingTeacher


def test_relevance_metrics_on_a_hand_made_pool() -> None:
    # one request, true grades 3, 0, 1; the model puts all its mass on 2, 1, 1
    probabilities = np.eye(4)[[2, 1, 1]]
    truth = np.array([3, 0, 1])
    m = held_out_metrics(probabilities, truth, np.zeros(3, np.int64))
    assert math.isclose(m["accuracy"], 1 / 3)
    # expected grades 2, 1, 1 rank the grade-3 item first; the tied two share ranks 2 and 3
    dcg = 7 + (0 + 1) * (1 / math.log2(3) + 1 / math.log2(4)) / 2
    ideal = 7 + 1 / math.log2(3)
    assert math.isclose(m["ndcg@10"], dcg / ideal)
    assert m["pairs"] == 3 and m["requests"] == 1
    # predictions 2, 1, 1 against 3, 0, 1: F1 of grade 1 is 2 * 1 / (1 + 2), of 0, 2 and 3 zero
    assert math.isclose(m["macro_f1"], (2 / 3) / 4)
    assert (m["recall@0"], m["recall@1"], m["recall@3"]) == (0.0, 1.0, 0.0)
    assert math.isnan(m["recall@2"]) and m["ranked_requests"] == 1
    # expected grades 2, 1, 1 of the rows graded 3, 0, 1
    assert (m["expected@0"], m["expected@1"], m["expected@3"]) == (1.0, 1.0, 2.0)
    assert math.isnan(m["expected@2"])
    assert degenerate_metrics(m) == [
        "no held-out row has grade 2: its recall and mean expected grade are undefined"
    ]


def test_ndcg_is_degenerate_when_no_request_ranks_two_grades() -> None:
    # four requests of one graded title each, and one of two titles of one grade
    m = held_out_metrics(np.eye(4)[[0, 1, 2, 3, 3, 3]], np.array([0, 1, 2, 3, 2, 2]),
                          np.array([0, 1, 2, 3, 4, 4]))  # fmt: skip
    assert m["ndcg@10"] == 1.0 and m["ranked_requests"] == 0
    assert any(w.startswith("ndcg@10 is degenerate") for w in degenerate_metrics(m))


def test_ndcg_is_flagged_when_most_requests_rank_one_grade() -> None:
    # three requests of one graded title each, one ranking grades 3 and 0: NDCG@10 moves on 1 of 4
    grade, request = np.array([0, 1, 2, 3, 0]), np.array([0, 1, 2, 3, 3])
    m = held_out_metrics(np.eye(4)[grade], grade, request)
    assert m["ranked_requests"] == 1 and m["requests"] == 4
    warning = degenerate_metrics(m)[0]
    assert warning.startswith("only 1 of the 4 held-out requests (25%) rank two titles")
    m = held_out_metrics(np.eye(4)[grade], grade, np.array([0, 0, 1, 1, 1]))  # both rank grades
    assert degenerate_metrics(m) == []


def test_per_row_predictions_are_written_for_every_model(pairs, tmp_path) -> None:
    sample = held_out_sample(pairs, 4, seed=1)
    uniform = np.full((sample.query.size, 4), 0.25)
    skewed = np.tile([0.1, 0.2, 0.3, 0.4], (sample.query.size, 1))
    path = write_predictions(tmp_path / "p.parquet", sample, pairs, {"a": uniform, "b": skewed})
    table = pq.read_table(path)
    rows = sample.request.size
    assert table.num_rows == 2 * rows and table["model"].to_pylist() == ["a"] * rows + ["b"] * rows
    queries, titles = sample.texts(pairs)
    assert table["query"].to_pylist()[:rows] == [queries[i] for i in sample.inverse]
    assert table["title"].to_pylist()[:rows] == [titles[i] for i in sample.inverse]
    np.testing.assert_array_equal(table["grade"].to_numpy()[rows:], sample.grade)
    assert set(table["predicted"].to_pylist()[rows:]) == {3}
    np.testing.assert_allclose(table["expected"].to_numpy()[rows:], 2.0, rtol=1e-6)
    np.testing.assert_allclose(table["p1"].to_numpy()[rows:], 0.2, rtol=1e-6)
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_teacher_and_student_are_scored_on_the_same_held_out_pools(
    pairs, student_dir, tmp_path
) -> None:
    student, tokenizer = load_student(student_dir)
    sample = held_out_sample(pairs, 6, seed=3)
    again = held_out_sample(pairs, 6, seed=3)
    np.testing.assert_array_equal(sample.request, again.request)
    assert np.unique(sample.request).size == 6
    # each distinct pair once, each row mapped back to its pair
    queries, titles = sample.texts(pairs)
    assert len(set(zip(queries, titles, strict=True))) == sample.query.size
    assert sample.table(pairs).to_pydict() == {"query": queries, "title": titles}
    assert sample.inverse.size == sample.request.size
    teacher = CountingTeacher()
    result = evaluate_teacher(teacher, pairs, tmp_path / "cache", 6, seed=3, progress=False)
    assert teacher.encoded == sample.query.size
    scored = evaluate_held_out(student, tokenizer, pairs, 6, seed=3)
    assert (result["pairs"], result["requests"]) == (scored["pairs"], scored["requests"]) == (
        sample.request.size, 6)  # fmt: skip
    with pytest.raises(ValueError, match="distinct pairs"):
        sample.score(np.full((sample.query.size + 1, 4), 0.25))
