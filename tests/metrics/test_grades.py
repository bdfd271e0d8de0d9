"""prectr.metrics.grades: weighted figures of predicted grades; with weights of ones they are the
plain figures, and a row of weight k counts as k copies of it."""

import numpy as np
import pytest

from prectr.metrics.grades import (
    midranks,
    spearman,
    weighted_accuracy,
    weighted_macro_f1,
    weighted_spearman,
)


def sample(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    grade = rng.choice([0, 2, 3], n)  # grade 1 never true, as on a mapped 3-level scale
    predicted = np.where(rng.random(n) < 0.6, grade, rng.choice([0, 1, 3], n))
    expected = np.round(grade + rng.normal(0, 1, n), 1)  # rounded: ties
    return grade, predicted, expected


def figures(grade, predicted, expected, weights):
    return {
        "accuracy": weighted_accuracy(grade, predicted, weights),
        "macro_f1": weighted_macro_f1(grade, predicted, weights),
        "spearman": weighted_spearman(expected, grade, weights),
    }


def test_by_hand() -> None:
    grade, predicted = np.array([0, 0, 2, 3]), np.array([0, 2, 2, 1])
    ones = np.ones((1, 4))
    assert weighted_accuracy(grade, predicted, ones)[0] == pytest.approx(0.5)
    # F1: grade 0: 2*1/(2+1), grade 1: 0 (predicted, never true), grade 2: 2*1/(1+2),
    # grade 3: 0 (true, never predicted)
    assert weighted_macro_f1(grade, predicted, ones)[0] == pytest.approx((2 / 3 + 2 / 3) / 4)
    # ranks a: 1 2 3 4, ranks b: 2 1 4 3 -> d^2 sum 4 -> 1 - 6*4/(4*15) = 0.6
    assert spearman(np.array([1, 2, 3, 4]), np.array([20, 10, 40, 30])) == pytest.approx(0.6)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_midranks_share_ties_and_count_weights() -> None:
    values = np.array([3, 1, 3, 2])
    np.testing.assert_array_equal(midranks(values, np.ones((1, 4)))[0], [3.5, 1, 3.5, 2])
    # the row valued 1 drawn twice: ranks 1 and 2 are its, so 2 is ranked 3, the 3s 4 and 5
    np.testing.assert_array_equal(midranks(values, np.array([[1.0, 2, 1, 1]]))[0],
                                  [4.5, 1.5, 4.5, 3])  # fmt: skip


def test_a_row_weighted_k_times_counts_as_k_copies() -> None:
    grade, predicted, expected = sample()
    weights = np.random.default_rng(1).integers(0, 3, (4, grade.size)).astype(float)
    weighted = figures(grade, predicted, expected, weights)
    for k, row in enumerate(weights):
        rows = np.repeat(np.arange(grade.size), row.astype(int))
        copied = figures(grade[rows], predicted[rows], expected[rows], np.ones((1, rows.size)))
        for name, values in weighted.items():
            assert values[k] == pytest.approx(copied[name][0], abs=1e-12), name


def test_a_grade_absent_from_a_weighting_is_left_out_of_macro_f1() -> None:
    grade, predicted = np.array([0, 0, 3, 3]), np.array([0, 0, 3, 0])
    without_threes = np.array([[1.0, 1, 0, 0]])  # grade 3 neither true nor predicted
    assert weighted_macro_f1(grade, predicted, without_threes)[0] == pytest.approx(1.0)


def test_constant_sides_and_empty_weightings_give_nan_without_a_warning() -> None:
    grade, predicted = np.array([0, 2, 3]), np.array([0, 2, 2])
    nothing = np.array([[1.0, 1, 1], [0, 0, 0]])  # the second weighting keeps no row
    with np.errstate(all="raise"):
        assert np.isnan(weighted_spearman(np.zeros(3), np.arange(3), np.ones((2, 3)))).all()
        for figure in (weighted_accuracy, weighted_macro_f1, weighted_spearman):
            values = figure(grade, predicted, nothing)
            assert values.shape == (2,) and np.isfinite(values[0]) and np.isnan(values[1])
            assert np.isnan(figure(grade[:0], predicted[:0], np.ones((3, 0)))).all()
