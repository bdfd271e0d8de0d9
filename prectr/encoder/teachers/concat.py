"""Several teachers side by side, e.g. ``smollm2+minilm``: one head adapted on all their hidden
states at once, zero-shot grades as the normalised geometric mean of their grade distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prectr.encoder.teachers.base import Teacher


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ConcatTeacher(Teacher):
    """Hidden states concatenated in order; grade logits the mean of the log-probabilities."""

    def __init__(self, teachers: Sequence[Teacher]) -> None:
        if len(teachers) < 2:
            raise ValueError("a concatenation needs at least two teachers")
        self.teachers = list(teachers)
        self.name = "+".join(t.name for t in self.teachers)
        self.hidden_size = sum(t.hidden_size for t in self.teachers)
        dtypes = {t.dtype for t in self.teachers} - {None}
        if len(dtypes) > 1:  # an adapted teacher reloads its base at one dtype
            raise ValueError(f"the teachers run in {' and '.join(sorted(dtypes))}: side by "
                             "side they must run in one dtype")  # fmt: skip
        self.dtype = dtypes.pop() if dtypes else None

    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        outputs = [t.encode(queries, titles) for t in self.teachers]
        logits = np.mean([log_softmax(logits) for logits, _ in outputs], axis=0)
        hidden = np.concatenate([hidden for _, hidden in outputs], axis=1)
        return logits.astype(np.float32), hidden

    def hidden(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        return np.concatenate([t.hidden(queries, titles) for t in self.teachers], axis=1)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "concat", "parts": [t.fingerprint() for t in self.teachers]}
