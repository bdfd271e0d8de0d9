"""Grade distributions from a teacher's logits, and Spearman's rank correlation."""

from __future__ import annotations

import numpy as np

from prectr.encoder.teachers.base import N_GRADES


def softmax(logits: np.ndarray) -> np.ndarray:
    """Grade distributions ``(N, 4)`` from grade logits ``(N, 4)``."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != N_GRADES:
        raise ValueError(f"logits of shape {logits.shape}, expected (N, {N_GRADES})")
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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
