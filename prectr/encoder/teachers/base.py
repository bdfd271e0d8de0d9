"""The one interface every relevance teacher implements.

A teacher judges (query, item title) pairs. For a batch of pairs it returns grade logits over the
four grades 0..3 (0 irrelevant, 1 complement, 2 substitute, 3 exact) and a pooled hidden state,
the features an adaptation head is trained on and a student may be distilled towards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from prectr.words import count

N_GRADES = 4


class Teacher(ABC):
    """A frozen relevance judge: ``encode`` gives grade logits and hidden states in one pass."""

    name: str
    hidden_size: int
    # the dtype its language models run in; None where none applies (sentence encoders run in
    # float32 whatever is asked)
    dtype: str | None = None

    @abstractmethod
    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grade logits (N, 4) and hidden states (N, hidden_size), both float32."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What determines the outputs (weights, prompt, head): equal fingerprints, equal labels."""

    def grade_logits(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        return self.encode(queries, titles)[0]

    def hidden(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        """The hidden states alone (a teacher may then skip what only the logits need)."""
        return self.encode(queries, titles)[1]


def check_pairs(queries: Sequence[str], titles: Sequence[str]) -> None:
    if len(queries) != len(titles):
        raise ValueError(
            f"{count(len(queries), 'query', 'queries')} but {count(len(titles), 'title')}: "
            "pass one per pair"
        )
    for what, texts in (("query", queries), ("title", titles)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{what} {bad} is {texts[bad]!r}, not a string")
