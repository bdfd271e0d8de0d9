import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from prectr.metrics import (
    auc,
    calibration,
    expected_calibration_error,
    gauc,
    group_auc,
    logloss,
    relaimpr,
    reliability_bins,
)

# Four groups: a is perfect, b half right, c has one class (skipped), d has a tie.
GROUPS = np.array(["a", "a", "b", "b", "b", "c", "c", "d", "d", "d", "d"])
LABELS = np.array([1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0])
SCORES = np.array([0.9, 0.1, 0.2, 0.5, 0.1, 0.3, 0.6, 0.4, 0.3, 0.4, 0.1])


def test_auc_hand_computed_with_a_tie():
    # positives {0.9, 0.5, 0.3}, negatives {0.8, 0.5, 0.1}: 0.9 beats all 3; 0.5 beats 0.1 and
    # ties 0.5 (1 + 1/2); 0.3 beats 0.1 (1). (3 + 1.5 + 1) / 9 = 5.5 / 9.
    labels = [1, 0, 1, 0, 1, 0]
    scores = [0.9, 0.8, 0.5, 0.5, 0.3, 0.1]
    assert auc(labels, scores) == pytest.approx(5.5 / 9)


def test_auc_agrees_with_sklearn_on_heavy_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 500)
        s = np.round(rng.random(500), 1)
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_of_one_class_is_nan_and_bad_labels_raise():
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="0 or 1"):
        auc([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([1, 0], [np.nan, 0.2])


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        # per-group AUC: a 1 (2 rows, 1 pos), b 0.5 (3 rows, 1 pos), d 2.5/4 (4 rows, 2 pos)
        ("impression", (1 * 2 + 0.5 * 3 + 0.625 * 4) / 9),
        ("unweighted", (1 + 0.5 + 0.625) / 3),
        ("positives", (1 * 1 + 0.5 * 1 + 0.625 * 2) / 4),
    ],
)
def test_gauc_reductions_hand_computed(reduction, expected):
    assert gauc(LABELS, SCORES, GROUPS, reduction) == pytest.approx(expected)


def test_gauc_agrees_with_a_per_group_sklearn_loop():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 40, 3000)
    y = (rng.random(3000) < 0.3).astype(int)
    s = np.round(rng.random(3000), 2)
    aucs, weights = [], []
    for g in np.unique(groups):
        m = groups == g
        if 0 < y[m].sum() < m.sum():
            aucs.append(roc_auc_score(y[m], s[m]))
            weights.append(m.sum())
    assert gauc(y, s, groups) == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)
    assert gauc(y, s, groups.astype(str)) == pytest.approx(gauc(y, s, groups), abs=1e-12)


def test_group_auc_per_group_hand_computed():
    keys, aucs, rows, positives = group_auc(LABELS, SCORES, GROUPS)
    assert keys.tolist() == ["a", "b", "c", "d"]
    # d: positives 0.4, 0.3; negatives 0.4, 0.1: 0.4 ties 0.4 and beats 0.1 (1.5), 0.3 beats 0.1
    # (1): 2.5 / 4. c holds positives only: nan.
    np.testing.assert_allclose(aucs, [1.0, 0.5, np.nan, 0.625])
    assert rows.tolist() == [2, 3, 2, 4]
    assert positives.tolist() == [1, 1, 2, 2]


def test_wide_group_keys_take_the_lexsort_path_with_the_same_result():
    # a group span of 2^61 times 3 distinct scores does not fit the combined 62-bit sort key
    labels = [1, 0, 1, 0, 0, 1]
    scores = [0.9, 0.5, 0.5, 0.1, 0.9, 0.5]
    wide = gauc(labels, scores, np.array([0, 0, 0, 2**61, 2**61, 2**61]))
    assert wide == pytest.approx(gauc(labels, scores, [0, 0, 0, 1, 1, 1]))
    # group 0: 0.9 beats 0.5; 0.5 ties 0.5 (1 + 1/2 over 2 pairs); group 1: 0.5 vs 0.1, 0.9:
    # (1 + 0) / 2. Impression-weighted (3 rows each): (0.75 + 0.5) / 2.
    assert wide == pytest.approx(0.625)


def test_gauc_without_eligible_group_is_nan_and_reduction_is_checked():
    assert math.isnan(gauc([1, 0], [0.1, 0.2], [1, 2]))
    assert math.isnan(gauc([], [], []))
    assert math.isnan(auc([], []))
    with pytest.raises(ValueError, match="groups"):
        gauc([1, 0], [0.1, 0.2], [1])
    with pytest.raises(ValueError, match="reduction"):
        gauc(LABELS, SCORES, GROUPS, "mean")


def test_logloss_relaimpr_calibration_golden():
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert relaimpr(0.75, 0.7) == pytest.approx(0.25)
    assert calibration([1, 0, 0, 0], [0.5] * 4) == pytest.approx(2.0)
    assert math.isnan(calibration([0, 0], [0.1, 0.2]))
    # mean predicted (0.2 + 0.4 + 0.6 + 0.4) / 4 = 0.4 over observed 2 / 4 = 0.5
    assert calibration([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.4]) == pytest.approx(0.8)


def test_reliability_bins_and_ece_golden():
    labels, probs = [1, 0, 1, 0], [0.9, 0.1, 0.6, 0.2]
    # equal mass, two bins of the sorted probabilities: {0.1, 0.2} and {0.6, 0.9}
    assert reliability_bins(labels, probs, 2) == [
        (pytest.approx(0.15), 0.0, 2), (pytest.approx(0.75), 1.0, 2)
    ]  # fmt: skip
    # (2 |0.15 - 0| + 2 |0.75 - 1|) / 4
    assert expected_calibration_error(labels, probs, 2) == pytest.approx(0.2)
    # three bins of 2, 1, 1 rows: (2 * 0.15 + |0.6 - 1| + |0.9 - 1|) / 4
    assert expected_calibration_error(labels, probs, 3) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1], [0.0, 1.0], 2) == 0.0
    assert math.isnan(expected_calibration_error([], []))
