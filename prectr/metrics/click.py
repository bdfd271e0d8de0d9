"""Click metrics: exact AUC (ties count one half), GAUC, logloss, RelaImpr, calibration (the
ratio, reliability bins and the expected calibration error)."""

from __future__ import annotations

import numpy as np

from prectr.metrics.groups import sort_within_groups

REDUCTIONS = ("impression", "unweighted", "positives")


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-d")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return labels.astype(np.float64), scores


def group_auc(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct group, in sorted key order: the key, AUC (nan for one-class groups), rows,
    positive rows.

    AUC = (sum of positives' average ranks - P(P+1)/2) / (P N), the Mann-Whitney statistic,
    with tied scores given the average of the ranks they span.
    """
    labels, scores = _checked(labels, scores)
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"groups {groups.shape} and labels {labels.shape} must be equal 1-d")
    if labels.size == 0:
        return groups[:0], np.zeros(0), np.zeros(0), np.zeros(0)
    order, c, offset = sort_within_groups(groups, scores)
    n_groups = int(c[-1]) + 1
    s = scores[order]
    run_start = np.r_[True, (c[1:] != c[:-1]) | (s[1:] != s[:-1])]
    run_first = np.flatnonzero(run_start)
    run_last = np.r_[run_first[1:], c.size] - 1
    # rank (1-based, within group) averaged over each run of tied scores
    run_rank = (offset[run_first] + offset[run_last]) / 2.0 + 1.0
    rank = run_rank[np.cumsum(run_start) - 1]
    y = labels[order]
    n = np.bincount(c, minlength=n_groups).astype(np.float64)
    pos = np.bincount(c, weights=y, minlength=n_groups)
    rank_sum = np.bincount(c, weights=rank * y, minlength=n_groups)
    neg = n - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)
    aucs[(pos == 0) | (neg == 0)] = np.nan
    return groups[order[offset == 0]], aucs, n, pos


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC; nan when only one class is present."""
    labels = np.asarray(labels)
    _, aucs, _, _ = group_auc(labels, scores, np.zeros(labels.size, dtype=np.int64))
    return float(aucs[0]) if aucs.size else float("nan")


def gauc(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, reduction: str = "impression"
) -> float:
    """AUC per group, averaged over groups that hold both classes (others are skipped).

    ``reduction``: ``impression`` weights a group by its rows, ``unweighted`` by one, and
    ``positives`` by its positive rows. nan when no group holds both classes.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {REDUCTIONS}")
    _, aucs, n, pos = group_auc(labels, scores, groups)
    eligible = ~np.isnan(aucs)
    if not eligible.any():
        return float("nan")
    weight = {"impression": n, "unweighted": np.ones_like(n), "positives": pos}[reduction]
    return float(np.average(aucs[eligible], weights=weight[eligible]))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    y, p = _checked(labels, probs)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def relaimpr(auc_model: float, auc_base: float) -> float:
    """Relative AUC improvement over a base model: (AUC - 0.5) / (AUC_base - 0.5) - 1."""
    return (auc_model - 0.5) / (auc_base - 0.5) - 1.0


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted probability over mean observed rate (1 is calibrated; nan if no click)."""
    y, p = _checked(labels, probs)
    return float(p.mean() / y.mean()) if y.sum() > 0 else float("nan")


def reliability_bins(
    labels: np.ndarray, probs: np.ndarray, n: int = 10
) -> list[tuple[float, float, int]]:
    """Equal-mass bins of the predicted probability (rows sorted by it, split into ``n`` parts
    of sizes differing by at most one): (mean predicted, mean observed, rows) of each
    non-empty bin, lowest first. Equal mass, because click probabilities crowd near 0: equal
    widths would put nearly every impression in the first bin."""
    y, p = _checked(labels, probs)
    order = np.argsort(p, kind="stable")
    return [
        (float(p[b].mean()), float(y[b].mean()), int(b.size))
        for b in np.array_split(order, n)
        if b.size
    ]


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n: int = 10) -> float:
    """ECE: the row-weighted mean over :func:`reliability_bins` of |mean predicted - mean
    observed| (nan without rows)."""
    bins = reliability_bins(labels, probs, n)
    if not bins:
        return float("nan")
    total = sum(rows for _, _, rows in bins)
    return float(sum(rows * abs(p - y) for p, y, rows in bins) / total)
