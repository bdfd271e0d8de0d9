import numpy as np
import pytest

from prectr.data.simulate.clicks import (
    EXAMINATION,
    RELEVANCE_ATTRACTION,
    ClickModel,
    attraction,
    relevance_attraction,
)


def test_guide_parameters():
    assert np.allclose(RELEVANCE_ATTRACTION, [0.1, 0.1 + 0.9 / 7, 0.1 + 0.9 * 3 / 7, 1.0])
    assert np.allclose(ClickModel("pbm", eta=2.0).examination(10), EXAMINATION**2)
    extended = ClickModel("pbm").examination(12)
    assert extended.size == 12 and np.all(np.diff(extended[9:]) < 0)


@pytest.mark.parametrize("name", ["pbm", "cascade", "dcm"])
def test_closed_form_expected_clicks_match_sampling(name):
    model = ClickModel(name, eta=1.0, dcm_lambda=0.6)
    rng = np.random.default_rng(0)
    a = np.tile(rng.random((1, 10)), (200_000, 1))
    sampled = model.sample(a, rng).mean(axis=0)
    expected = model.expected_clicks(a)[0]
    assert np.allclose(sampled, expected, atol=4e-3), (sampled, expected)


def test_cascade_stops_at_the_first_click_and_dcm_goes_on_sometimes():
    a = np.full((50_000, 10), 0.5)
    rng = np.random.default_rng(1)
    assert ClickModel("cascade").sample(a, rng).sum(1).max() == 1
    assert ClickModel("dcm", dcm_lambda=0.6).sample(a, rng).sum(1).max() > 1


def test_hand_computed_cascade_expectation():
    # e1 = 0.68; P(exam 2) = 0.68 * (0.61 / 0.68) * (1 - 0.5) = 0.305
    expected = ClickModel("cascade").expected_clicks(np.array([[0.5, 0.5]]))
    assert np.allclose(expected, [[0.34, 0.1525]])


def test_tolerance_lifts_non_exact_grades_only():
    grade = np.array([0, 1, 2, 3])
    strict = relevance_attraction(grade, np.full(4, -1.0), 1.5)
    tolerant = relevance_attraction(grade, np.full(4, 1.0), 1.5)
    assert np.all(tolerant[:3] > strict[:3]) and tolerant[3] == strict[3] == 1.0


def test_attraction_is_a_probability_increasing_in_taste():
    grade = np.full(3, 3)
    zero = np.zeros(3)
    a = attraction(grade, zero, np.array([-2.0, 0.0, 2.0]), zero, 1.5, 0.8, 0.4)
    assert np.all((a > 0) & (a < 1)) and np.all(np.diff(a) > 0)
