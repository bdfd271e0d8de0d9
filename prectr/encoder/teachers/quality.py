"""A teacher's grades against true grades: accuracy, Spearman correlation, NDCG@10 per query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prectr.encoder.teachers.base import N_GRADES
from prectr.metrics.ranking import ndcg_at_k


def expected_grade(logits: np.ndarray) -> np.ndarray:
    """The mean grade under softmax(logits): the score pairs are ranked by."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != N_GRADES:
        raise ValueError(f"logits of shape {logits.shape}, expected (N, {N_GRADES})")
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)) @ np.arange(N_GRADES, dtype=np.float64)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` ascending, tied values sharing the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties averaged); nan when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def grade_quality(
    logits: np.ndarray, grades: np.ndarray, queries: Sequence[str]
) -> dict[str, float]:
    """Accuracy of the most likely grade, Spearman between expected and true grade over pairs,
    and NDCG@10 of each query's pairs ranked by expected grade (mean over queries with a
    relevant pair)."""
    grades = np.asarray(grades)
    if grades.shape != (len(logits),) or len(queries) != len(grades):
        raise ValueError(f"{len(logits)} logits, {grades.shape} grades, {len(queries)} queries")
    score = expected_grade(logits)
    groups = np.unique(np.asarray(queries, dtype=object), return_inverse=True)[1].ravel()
    return {
        "accuracy": float((np.asarray(logits).argmax(axis=1) == grades).mean()),
        "spearman": spearman(score, grades),
        "ndcg@10": ndcg_at_k(grades, score, groups, k=10),
        "pairs": len(grades),
        "queries": int(groups.max(initial=-1) + 1),
    }
