import numpy as np
import pytest

from prectr.encoder.teacher import softmax


def test_softmax_gives_the_grade_distributions():
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0]])
    logits = np.log(probabilities + 1e-30) + 7.0
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-9)
    with pytest.raises(ValueError, match=r"expected \(N, 4\)"):
        softmax(np.zeros((2, 3)))
