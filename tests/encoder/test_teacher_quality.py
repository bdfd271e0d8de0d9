import numpy as np
import pytest

from prectr.encoder.teacher import expected_grade, grade_quality, spearman
from prectr.encoder.teachers.quality import average_ranks


def test_expected_grade_is_the_mean_under_the_softmax():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]]) + 1e-30)
    np.testing.assert_allclose(expected_grade(logits), [2.0, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match=r"expected \(N, 4\)"):
        expected_grade(np.zeros((2, 3)))


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([3, 1, 3, 2])), [3.5, 1, 3.5, 2])


def test_spearman_by_hand():
    # ranks a: 1 2 3 4, ranks b: 2 1 4 3 -> d^2 sum 4 -> 1 - 6*4/(4*15) = 0.6
    assert spearman(np.array([1, 2, 3, 4]), np.array([20, 10, 40, 30])) == pytest.approx(0.6)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_grade_quality_by_hand():
    # query a: true grades 3, 0; the teacher ranks them right and gets both grades right.
    # query b: true grades 2, 0, 1; the teacher puts grade 1 first, then 2, then 0.
    grades = np.array([3, 0, 2, 0, 1])
    most_likely = np.array([3, 0, 1, 0, 2])
    logits = np.full((5, 4), -5.0)
    logits[np.arange(5), most_likely] = 5.0
    quality = grade_quality(logits, grades, ["a", "a", "b", "b", "b"])
    assert quality["accuracy"] == pytest.approx(3 / 5)
    ideal_b = 3 + 1 / np.log2(3)
    got_b = 1 + 3 / np.log2(3)
    assert quality["ndcg@10"] == pytest.approx((1.0 + got_b / ideal_b) / 2)
    assert quality["spearman"] == pytest.approx(spearman(expected_grade(logits), grades))
    assert quality["pairs"] == 5 and quality["queries"] == 2
    with pytest.raises(ValueError, match="5 logits"):
        grade_quality(logits, grades[:4], ["a"] * 4)
