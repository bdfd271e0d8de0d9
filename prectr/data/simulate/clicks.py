"""Click models and the attraction of an item to a user.

Examination by rank follows ULTRA's parameters, ``e_k ** eta`` with
``e = [0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06]`` (ranks past 10 continue
the last ratio). Relevance attraction by grade is ``0.1 + 0.9 (2^y - 1) / 7``.

One sequential process covers the three models. Rank 1 is examined with probability ``e_1``;
after rank ``k`` the user goes on with probability ``g_k = e_{k+1} / e_k``, times ``lambda`` if
they clicked at ``k``:

* ``pbm``: examinations are independent of clicks (marginally ``lambda = 1``);
* ``cascade``: ``lambda = 0``, the first click ends the session;
* ``dcm``: ``lambda = dcm_lambda``.

Expected clicks per request follow in closed form, which the online proxy uses: no sampling
noise when two rankers are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXAMINATION = np.array([0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06])
RELEVANCE_ATTRACTION = 0.1 + 0.9 * (2.0 ** np.arange(4) - 1) / 7
# How strongly tolerance moves the attraction of each grade (exact items need no tolerance).
TOLERANCE_REACH = np.array([0.3, 1.0, 1.0, 0.0])
PREFERENCE_BIAS = 0.5


def relevance_attraction(grade: np.ndarray, tolerance: np.ndarray, strength: float) -> np.ndarray:
    """``a(y) ** exp(-strength * t * reach(y))``: tolerant users (t > 0) lift non-exact grades."""
    exponent = np.exp(-strength * tolerance * TOLERANCE_REACH[grade])
    return RELEVANCE_ATTRACTION[grade] ** exponent


def attraction(
    grade: np.ndarray,
    tolerance: np.ndarray,
    taste: np.ndarray,
    popularity: np.ndarray,
    tolerance_strength: float,
    taste_weight: float,
    popularity_weight: float,
) -> np.ndarray:
    """P(click | examined): relevance attraction times a preference term in (0, 1)."""
    preference = preference_logit(taste, popularity, taste_weight, popularity_weight)
    return relevance_attraction(grade, tolerance, tolerance_strength) / (1.0 + np.exp(-preference))


def preference_logit(
    taste: np.ndarray, popularity: np.ndarray, taste_weight: float, popularity_weight: float
) -> np.ndarray:
    """The logit of attraction's preference term: the user's taste for the item and the item's
    popularity, weighted."""
    return PREFERENCE_BIAS + taste_weight * taste + popularity_weight * popularity


@dataclass(frozen=True)
class ClickModel:
    name: str
    eta: float = 1.0
    dcm_lambda: float = 0.6

    def examination(self, k: int) -> np.ndarray:
        """Examination probability of ranks 1..k."""
        ratio = EXAMINATION[-1] / EXAMINATION[-2]
        extra = EXAMINATION[-1] * ratio ** np.arange(1, max(k - EXAMINATION.size, 0) + 1)
        return np.concatenate([EXAMINATION, extra])[:k] ** self.eta

    @property
    def after_click(self) -> float:
        return {"pbm": 1.0, "cascade": 0.0, "dcm": self.dcm_lambda}[self.name]

    def expected_clicks(self, attraction: np.ndarray) -> np.ndarray:
        """Expected clicks at each rank for ranked attraction rows ``(n_requests, k)``."""
        exam = self.examination(attraction.shape[1])
        if self.name == "pbm":
            return attraction * exam
        out = np.empty_like(attraction)
        p = np.full(attraction.shape[0], exam[0])
        for j in range(attraction.shape[1]):
            out[:, j] = p * attraction[:, j]
            if j + 1 < attraction.shape[1]:
                a = attraction[:, j]
                p = p * (exam[j + 1] / exam[j]) * (1.0 - a + a * self.after_click)
        return out

    def sample(self, attraction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clicks (0/1, int8) for ranked attraction rows ``(n_requests, k)``."""
        n, k = attraction.shape
        exam = self.examination(k)
        u = rng.random((2, n, k))
        if self.name == "pbm":
            return (u[0] < attraction * exam).astype(np.int8)
        clicks = np.zeros((n, k), dtype=np.int8)
        examined = u[1, :, 0] < exam[0]
        for j in range(k):
            clicked = examined & (u[0, :, j] < attraction[:, j])
            clicks[:, j] = clicked
            if j + 1 < k:
                go_on = (exam[j + 1] / exam[j]) * np.where(clicked, self.after_click, 1.0)
                examined = examined & (u[1, :, j + 1] < go_on)
        return clicks
