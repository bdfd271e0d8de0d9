"""Figures of predicted relevance grades against true grades, each row weighted.

Row weights ``(b, n)``: ``b`` weightings of the same ``n`` rows (counts: non-negative, a row
of weight 0 left out), each figure computed under every one of them at once; a weighting that
keeps no row gives nan. With one weighting of ones these are the plain figures (the
unweighted :func:`spearman`; :func:`prectr.encoder.evaluate.grade_metrics`); with a bootstrap
resample's counts (each row weighted by how often the resample draws its request) they are the
figures of the resampled rows, a row drawn k times counted as k copies of it, so paired CIs of
a classifier's figures need no materialised resample (``benchmarks/encoder_paired.py``,
:mod:`prectr.metrics.paired`).

* ``accuracy``: the weighted share of rows whose predicted grade is the grade;
* ``macro_f1``: the F1 of each grade averaged over the grades that occur as a grade or a
  prediction among the rows of positive weight (a grade predicted but never true scores 0);
* ``spearman``: the weighted Pearson correlation of the two sides' mid-ranks (ties averaged;
  nan where either side is constant).
"""

from __future__ import annotations

import numpy as np


def weighted_accuracy(grade: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of ``predicted`` against ``grade`` (``(n,)`` each) under each row weighting of
    ``weights`` ``(b, n)``: ``(b,)``."""
    return _ratio((weights * (grade == predicted)).sum(1), weights.sum(1))


def weighted_macro_f1(grade: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 (the module docstring) under each row weighting ``(b, n)``: ``(b,)``."""
    f1, present = np.zeros(len(weights)), np.zeros(len(weights))
    for g in np.union1d(grade, predicted):
        true, hit = grade == g, predicted == g
        sizes = (weights * true).sum(1) + (weights * hit).sum(1)
        present += sizes > 0
        f1 += np.nan_to_num(_ratio(2 * (weights * (true & hit)).sum(1), sizes))
    return _ratio(f1, present)


def midranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each row's rank among the rows (a row of weight k counts as k rows), tied values sharing
    the mean of their ranks, under each row weighting ``(b, n)``: ``(b, n)``. With weights of
    ones, the 1-based average ranks."""
    if not values.size:
        return np.zeros(weights.shape)
    order = np.argsort(values, kind="stable")
    _, starts, group = np.unique(values[order], return_index=True, return_inverse=True)
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(group_weight, 1) - group_weight
    ranks = np.empty(weights.shape, dtype=np.float64)
    ranks[:, order] = (before + (group_weight + 1) / 2)[:, group]
    return ranks


def weighted_spearman(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of ``a`` and ``b`` (``(n,)`` each) under each row weighting
    ``(b, n)``: ``(b,)``, nan where either side is constant among the rows weighted."""
    x, y = midranks(a, weights), midranks(b, weights)
    total = weights.sum(1, keepdims=True)
    x = x - _ratio((weights * x).sum(1, keepdims=True), total)
    y = y - _ratio((weights * y).sum(1, keepdims=True), total)
    covariance = (weights * x * y).sum(1)
    return _ratio(covariance, np.sqrt((weights * x * x).sum(1) * (weights * y * y).sum(1)))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, nan where the denominator is 0 (nothing weighted), without
    a warning."""
    out = np.full(np.shape(denominator), np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties averaged); nan when either side is
    constant."""
    a, b = np.asarray(a), np.asarray(b)
    return float(weighted_spearman(a, b, np.ones((1, a.size)))[0])
