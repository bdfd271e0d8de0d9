import math

import numpy as np
import pytest

from prectr.encoder.evaluate import evaluate_held_out, held_out_sample, relevance_metrics
from prectr.encoder.student import load_student
from prectr.encoder.teacher import evaluate_teacher
from tests.encoder.teacher_models import CountingTeacher


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
