import numpy as np
import pytest

from prectr.encoder.teacher import softmax, spearman
from prectr.encoder.teachers.quality import average_ranks


def test_softmax_gives_the_grade_distributions():
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    logits = np.log(probabilities + 1e-30) + 7.0
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-9)
    with pytest.raises(ValueError, match=r"expected \(N, 4\)"):
        softmax(np.zeros((2, 3)))


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([3, 1, 3, 2])), [3.5, 1, 3.5, 2])


def test_spearman_by_hand():
    # ranks a: 1 2 3 4, ranks b: 2 1 4 3 -> d^2 sum 4 -> 1 - 6*4/(4*15) = 0.6
    assert spearman(np.array([1, 2, 3, 4]), np.array([20, 10, 40, 30])) == pytest.approx(0.6)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
