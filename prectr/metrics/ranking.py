"""Ranking metrics over candidate pools, one group per request, on true relevance grades.

Grades are the true judgments 0..3 (0 irrelevant, 3 exact). Callers pass true grades only: rows
with an unknown (null) grade must be dropped or filled first; NaN or negative grades raise.
Within a group rows are ranked by descending score, tied scores keeping their row order.
"""

from __future__ import annotations

import numpy as np

from prectr.metrics.groups import rank_within_group

TIES = ("order", "average")  # how ndcg_at_k ranks tied scores
EMPTY_MODES = ("skip", "zero", "one")


def _prepared(
    grades: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Checked float grades, and per row its dense group code and rank; plus the group count."""
    grades = np.asarray(grades, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not grades.shape == scores.shape == np.shape(groups) or grades.ndim != 1:
        raise ValueError("grades, scores and groups must be 1-d and of the same length")
    if np.isnan(grades).any() or (grades < 0).any():
        raise ValueError("grades must be known and >= 0 (pass true grades)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rank, codes, n_groups = rank_within_group(scores, groups)
    return grades, codes, rank, n_groups


def ndcg_at_k(
    grades: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int = 10,
    empty: str = "skip",
    ties: str = "order",
) -> float:
    """Mean over groups of DCG@k / ideal DCG@k, gains 2^grade - 1, discount 1/log2(rank + 1).

    Rows are ranked by descending score; tied rows keep row order (``ties="order"``) or each
    takes the mean discount of the ranks its tie shares (``"average"``: the expectation over
    random tie-breaking, McSherry and Najork, ECIR 2008; a constant score then gets the
    chance level, not the rows' order). The ideal DCG@k ranks the same group's grades
    descending. A group with no relevant item (ideal DCG 0) is left out (``empty="skip"``) or
    counts as 0 (``"zero"``) or 1 (``"one"``). nan when no group counts.
    """
    if empty not in EMPTY_MODES:
        raise ValueError(f"empty {empty!r}: expected one of {EMPTY_MODES}")
    ndcg, has_relevant = ndcg_at_k_per_group(grades, scores, groups, k, ties)
    if empty == "skip":
        return float(ndcg[has_relevant].mean()) if has_relevant.any() else float("nan")
    ndcg[~has_relevant] = 0.0 if empty == "zero" else 1.0
    return float(ndcg.mean()) if ndcg.size else float("nan")


def ndcg_at_k_per_group(
    grades: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 10, ties: str = "order"
) -> tuple[np.ndarray, np.ndarray]:
    """NDCG@k of each group (0 where it has no relevant item) and whether it has one; ``ties``
    as :func:`ndcg_at_k`."""
    if ties not in TIES:
        raise ValueError(f"ties {ties!r}: expected one of {TIES}")
    grades, codes, rank, n_groups = _prepared(grades, scores, groups, k)
    gain = 2.0**grades - 1.0
    discount = np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)
    if ties == "average":
        score = np.asarray(scores, dtype=np.float64)
        tie = np.unique(np.stack([codes.astype(np.float64), score]), axis=1, return_inverse=True)[1]
        tie = tie.ravel()
        discount = (np.bincount(tie, discount) / np.bincount(tie))[tie]
    dcg = np.bincount(codes, weights=gain * discount, minlength=n_groups)
    ideal_rank, _, _ = rank_within_group(grades, codes)
    ideal_discount = np.where(ideal_rank <= k, 1.0 / np.log2(ideal_rank + 1.0), 0.0)
    idcg = np.bincount(codes, weights=gain * ideal_discount, minlength=n_groups)
    has_relevant = idcg > 0
    return np.divide(dcg, idcg, out=np.zeros(n_groups), where=has_relevant), has_relevant


def _top_k_mean_per_group(
    values: np.ndarray, codes: np.ndarray, rank: np.ndarray, n_groups: int, k: int
) -> np.ndarray:
    """Per group the mean of ``values`` over its rows ranked <= k."""
    top = rank <= k
    total = np.bincount(codes, weights=np.where(top, values, 0.0), minlength=n_groups)
    count = np.bincount(codes, weights=top, minlength=n_groups)
    return total / count


def _mean(per_group: np.ndarray) -> float:
    return float(per_group.mean()) if per_group.size else float("nan")


def mean_grade_at_k_per_group(
    grades: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 10
) -> np.ndarray:
    """Mean true grade of each group's top min(k, size) rows, in sorted group-key order."""
    grades, codes, rank, n_groups = _prepared(grades, scores, groups, k)
    return _top_k_mean_per_group(grades, codes, rank, n_groups, k)


def mean_grade_at_k(
    grades: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int = 10
) -> float:
    """Mean true grade of each group's top min(k, size) rows, averaged over groups."""
    return _mean(mean_grade_at_k_per_group(grades, scores, groups, k))


def irrelevant_share_at_k_per_group(
    grades: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int = 10,
    irrelevant_grade: int = 0,
) -> np.ndarray:
    """Share of rows with grade <= ``irrelevant_grade`` in each group's top min(k, size) rows,
    in sorted group-key order."""
    grades, codes, rank, n_groups = _prepared(grades, scores, groups, k)
    is_irrelevant = (grades <= irrelevant_grade).astype(np.float64)
    return _top_k_mean_per_group(is_irrelevant, codes, rank, n_groups, k)


def irrelevant_share_at_k(
    grades: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int = 10,
    irrelevant_grade: int = 0,
) -> float:
    """Share of rows with grade <= ``irrelevant_grade`` in each group's top min(k, size) rows,
    averaged over groups."""
    return _mean(irrelevant_share_at_k_per_group(grades, scores, groups, k, irrelevant_grade))


def recall_at_k_per_group(
    grades: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int = 100,
    relevant_grade: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Per group (sorted key order) the share of its rows with grade >= ``relevant_grade``
    that rank in its top k (0 where it has none), and whether it has any."""
    grades, codes, rank, n_groups = _prepared(grades, scores, groups, k)
    relevant = grades >= relevant_grade
    found = np.bincount(codes, weights=relevant & (rank <= k), minlength=n_groups)
    total = np.bincount(codes, weights=relevant, minlength=n_groups)
    has_relevant = total > 0
    return np.divide(found, total, out=np.zeros(n_groups), where=has_relevant), has_relevant


def recall_at_k(
    grades: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    k: int = 100,
    relevant_grade: int = 3,
) -> float:
    """Recall@k of the rows with grade >= ``relevant_grade`` (by default the exact items),
    averaged over the groups that hold any; nan when none does. On a sample of a larger
    candidate set (the broad set) this is the recall within the sample, so a figure is
    comparable only between rankings of the same sample."""
    recall, has_relevant = recall_at_k_per_group(grades, scores, groups, k, relevant_grade)
    return float(recall[has_relevant].mean()) if has_relevant.any() else float("nan")
