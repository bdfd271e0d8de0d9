"""Grade distributions from a teacher's logits."""

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
