import itertools
import math

import numpy as np
import pytest

from prectr.metrics import irrelevant_share_at_k, mean_grade_at_k, ndcg_at_k

# Request 1: grades 3, 0, 2 ranked by score as (0, 2, 3). Request 2 holds nothing relevant.
GRADES = np.array([3, 0, 2, 0, 0])
SCORES = np.array([0.1, 0.9, 0.5, 0.3, 0.2])
GROUPS = np.array([1, 1, 1, 2, 2])
# DCG@3 = 0/log2(2) + 3/log2(3) + 7/log2(4); ideal = 7/log2(2) + 3/log2(3) + 0
NDCG_1 = (3 / math.log2(3) + 7 / 2) / (7 + 3 / math.log2(3))


def test_ndcg_hand_computed():
    assert ndcg_at_k(GRADES[:3], SCORES[:3], GROUPS[:3], k=3) == pytest.approx(NDCG_1)
    assert ndcg_at_k(GRADES[:3], SCORES[:3], GROUPS[:3], k=1) == 0.0


@pytest.mark.parametrize(
    ("empty", "expected"), [("skip", NDCG_1), ("zero", NDCG_1 / 2), ("one", (NDCG_1 + 1) / 2)]
)
def test_groups_without_relevant_items(empty, expected):
    assert ndcg_at_k(GRADES, SCORES, GROUPS, k=3, empty=empty) == pytest.approx(expected)


def test_ndcg_agrees_with_a_brute_force_loop():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 4, 2000)
    scores = np.round(rng.random(2000), 2)
    groups = rng.integers(0, 50, 2000)
    values = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        ranked = idx[np.argsort(-scores[idx], kind="stable")][:10]
        ideal = np.sort(grades[idx])[::-1][:10]
        disc = 1 / np.log2(np.arange(2, 12))
        dcg = ((2.0 ** grades[ranked] - 1) * disc[: ranked.size]).sum()
        idcg = ((2.0**ideal - 1) * disc[: ideal.size]).sum()
        if idcg > 0:
            values.append(dcg / idcg)
    assert ndcg_at_k(grades, scores, groups, k=10) == pytest.approx(np.mean(values), abs=1e-12)


def test_ties_keep_row_order():
    # all scores tie: the first row is ranked first
    assert ndcg_at_k([3, 0], [0.5, 0.5], [1, 1], k=1) == 1.0
    assert ndcg_at_k([0, 3], [0.5, 0.5], [1, 1], k=1) == 0.0


def test_mean_grade_and_irrelevant_share_hand_computed():
    # top 2 of request 1: grades 0, 2 (mean 1, half irrelevant); request 2: 0, 0 (all irrelevant)
    assert mean_grade_at_k(GRADES, SCORES, GROUPS, k=2) == pytest.approx(0.5)
    assert irrelevant_share_at_k(GRADES, SCORES, GROUPS, k=2) == pytest.approx(0.75)
    # a group smaller than k contributes the mean of all its rows
    assert mean_grade_at_k(GRADES, SCORES, GROUPS, k=10) == pytest.approx((5 / 3 + 0) / 2)
    # grades <= 2 count as irrelevant: request 1's top 2 (0, 2) are both, request 2's too
    assert irrelevant_share_at_k(GRADES, SCORES, GROUPS, k=2, irrelevant_grade=2) == 1.0
    # top 1 of request 1 is grade 0 (share 1); every group weighs the same, whatever its size
    assert irrelevant_share_at_k(GRADES[:3], SCORES[:3], GROUPS[:3], k=1) == 1.0


def test_wide_group_keys_take_the_lexsort_path_with_the_same_result():
    wide = np.where(GROUPS == 2, 2**61, 0)
    for empty in ("skip", "zero", "one"):
        expected = ndcg_at_k(GRADES, SCORES, GROUPS, k=3, empty=empty)
        assert ndcg_at_k(GRADES, SCORES, wide, k=3, empty=empty) == pytest.approx(expected)
    assert mean_grade_at_k(GRADES, SCORES, wide, k=2) == pytest.approx(0.5)


def test_unknown_grades_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="true grades"):
        ndcg_at_k([np.nan, 1], [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="true grades"):
        mean_grade_at_k([-1, 1], [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        irrelevant_share_at_k([0, 1], [np.nan, 0.2], [1, 1])
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k([0, 1], [0.1, 0.2], [1, 1], k=0)
    with pytest.raises(ValueError, match="same length"):
        ndcg_at_k([0, 1], [0.1, 0.2], [1])
    with pytest.raises(ValueError, match="empty"):
        ndcg_at_k(GRADES, SCORES, GROUPS, empty="nan")


def test_recall_at_k_counts_exact_items_in_the_top_k():
    from prectr.metrics import recall_at_k, recall_at_k_per_group

    # request 1: exact items at scores 0.9 and 0.1 of four rows; request 2 holds none
    grades = np.array([3, 0, 1, 3, 2, 0])
    scores = np.array([0.9, 0.8, 0.5, 0.1, 0.4, 0.3])
    groups = np.array([1, 1, 1, 1, 2, 2])
    recall, has_exact = recall_at_k_per_group(grades, scores, groups, k=2)
    assert recall.tolist() == [0.5, 0.0] and has_exact.tolist() == [True, False]
    assert recall_at_k(grades, scores, groups, k=2) == 0.5
    assert recall_at_k(grades, scores, groups, k=4) == 1.0
    assert math.isnan(recall_at_k(grades[4:], scores[4:], groups[4:], k=2))


def test_per_group_values_average_to_the_scalar_metrics():
    from prectr.metrics import irrelevant_share_at_k_per_group, mean_grade_at_k_per_group

    rng = np.random.default_rng(1)
    grades, scores, groups = rng.integers(0, 4, 500), rng.random(500), rng.integers(0, 30, 500)
    assert mean_grade_at_k_per_group(grades, scores, groups).mean() == pytest.approx(
        mean_grade_at_k(grades, scores, groups)
    )
    assert irrelevant_share_at_k_per_group(grades, scores, groups).mean() == pytest.approx(
        irrelevant_share_at_k(grades, scores, groups)
    )


def test_average_ties_give_the_expected_ndcg_over_every_tie_break():
    """With ties="average" a group's NDCG is the mean over every order of its tied rows (brute
    force over the permutations); with "order" it is the rows' order."""
    grades = np.array([0, 3, 1, 2, 0, 3, 2])
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.2, 0.2, 0.2])
    groups = np.array([1, 1, 1, 1, 2, 2, 2])
    k = 3
    expected = []
    for group in (1, 2):
        rows = np.flatnonzero(groups == group)
        values = []
        for order in itertools.permutations(range(rows.size)):
            # break ties by the permutation: a tiny offset that keeps distinct scores in order
            jitter = np.empty(rows.size)
            jitter[list(order)] = np.arange(rows.size) * 1e-9
            values.append(ndcg_at_k(grades[rows], scores[rows] - jitter, np.zeros(rows.size), k))
        expected.append(np.mean(values))
    assert ndcg_at_k(grades, scores, groups, k, ties="average") == pytest.approx(np.mean(expected))
    assert ndcg_at_k(grades, scores, groups, k) != pytest.approx(np.mean(expected))
    constant = np.zeros(grades.size)  # a constant score: the chance level, whatever the order
    reordered = np.r_[np.arange(4)[::-1], np.arange(4, 7)[::-1]]
    assert ndcg_at_k(grades, constant, groups, k, ties="average") == pytest.approx(
        ndcg_at_k(grades[reordered], constant, groups, k, ties="average")
    )
    with pytest.raises(ValueError, match="ties 'random'"):
        ndcg_at_k(grades, scores, groups, k, ties="random")
