"""The world's summary: the numbers that show each phenomenon the simulator carries.

CTR by grade and by position (relevance and position bias), the grade mix of the pool against
the exposed top-k against real ESCI judgments (exposure bias), CTR by grade for strict and
tolerant users (personal tolerance), the cold-start share (Zipf activity), the share of test
impressions on items unseen in training (new items), and the share of labelled pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.vocabulary import esci_grade_shares

if TYPE_CHECKING:
    from prectr.data.simulate.world import WorldState

COLD_START_MAX_EARLIER = 2  # a request is cold-start when its user made at most 2 before it
TOLERANCE_GROUPS = ("strict", "middle", "tolerant")


def earlier_requests(user: np.ndarray) -> np.ndarray:
    """For requests in time order, how many requests the same user made before each one."""
    order = np.argsort(user, kind="stable")
    sorted_user = user[order]
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    starts = np.flatnonzero(first)
    counts = np.diff(np.r_[starts, user.size])
    out = np.empty(user.size, dtype=np.int64)
    out[order] = np.arange(user.size) - np.repeat(starts, counts)
    return out


class SummaryCounter:
    def __init__(self, config: WorldConfig, state: WorldState):
        self.config, self.state = config, state
        k = config.exposed_k
        self.pool_by_grade = np.zeros(4, dtype=np.int64)
        self.exposed_by_grade = np.zeros(4, dtype=np.int64)
        self.clicks_by_grade = np.zeros(4, dtype=np.int64)
        self.exposed_by_position = np.zeros(k, dtype=np.int64)
        self.clicks_by_position = np.zeros(k, dtype=np.int64)
        self.exposed_by_tolerance = np.zeros((3, 4), dtype=np.int64)
        self.clicks_by_tolerance = np.zeros((3, 4), dtype=np.int64)
        self.labelled = 0
        self.test_pool = np.zeros(2, dtype=np.int64)  # (rows, rows on new items)
        self.test_exposed = np.zeros(2, dtype=np.int64)
        tolerance = state.population.tolerance
        self.tolerance_group = np.digitize(tolerance, [-1 / 3, 1 / 3])
        self.last_train_day = config.n_days - 3

    def add(self, c: dict) -> None:
        grade, exposed, click = c["grade"], c["exposed"], c["click"].astype(bool)
        self.pool_by_grade += np.bincount(grade, minlength=4)
        self.exposed_by_grade += np.bincount(grade[exposed], minlength=4)
        self.clicks_by_grade += np.bincount(grade[exposed & click], minlength=4)
        pos = c["position"][exposed] - 1
        k = self.config.exposed_k
        self.exposed_by_position += np.bincount(pos, minlength=k)
        self.clicks_by_position += np.bincount(pos, weights=click[exposed], minlength=k).astype(
            np.int64
        )
        user = self.state.requests.user[c["request_id"]]
        cell = self.tolerance_group[user] * 4 + grade
        self.exposed_by_tolerance += np.bincount(cell[exposed], minlength=12).reshape(3, 4)
        self.clicks_by_tolerance += np.bincount(cell[exposed & click], minlength=12).reshape(3, 4)
        self.labelled += int(c["labelled"].sum())
        test = self.state.requests.day[c["request_id"]] == self.config.n_days - 1
        new = self.state.catalogue.launch_day[c["item_id"]] > self.last_train_day
        self.test_pool += [int(test.sum()), int((test & new).sum())]
        self.test_exposed += [int((test & exposed).sum()), int((test & exposed & new).sum())]

    def summary(self, elapsed: float) -> dict:
        req = self.state.requests
        earlier = earlier_requests(req.user)
        cold = earlier <= COLD_START_MAX_EARLIER
        test = req.day == self.config.n_days - 1
        n_pool = int(self.pool_by_grade.sum())
        n_exposed = int(self.exposed_by_grade.sum())
        esci = esci_grade_shares()
        return {
            "items": self.state.catalogue.size,
            "users": self.state.population.size,
            "active_users": int(np.unique(req.user).size),
            "queries": len(self.state.queries.text),
            "real_queries": int(self.state.queries.is_real.sum()),
            "requests": int(req.user.size),
            "impressions": n_pool,
            "exposed": n_exposed,
            "clicks": int(self.clicks_by_grade.sum()),
            "ctr": _ratio(self.clicks_by_grade.sum(), n_exposed),
            "ctr_by_grade": _ratios(self.clicks_by_grade, self.exposed_by_grade),
            "ctr_by_position": _ratios(self.clicks_by_position, self.exposed_by_position),
            "ctr_by_grade_and_tolerance": {
                name: _ratios(self.clicks_by_tolerance[i], self.exposed_by_tolerance[i])
                for i, name in enumerate(TOLERANCE_GROUPS)
            },
            "grade_mix": {
                "pool": _ratios(self.pool_by_grade, np.full(4, n_pool)),
                "exposed": _ratios(self.exposed_by_grade, np.full(4, n_exposed)),
                "esci_judged": [round(esci[g], 4) for g in range(4)],
            },
            "label_share": _ratio(self.labelled, n_pool),
            "cold_start": {
                "request_share": _ratio(cold.sum(), cold.size),
                "test_request_share": _ratio((cold & test).sum(), test.sum()),
            },
            "new_items": {
                "test_pool_share": _ratio(self.test_pool[1], self.test_pool[0]),
                "test_exposed_share": _ratio(self.test_exposed[1], self.test_exposed[0]),
            },
            "seconds": round(elapsed, 3),
            "impressions_per_second": round(n_pool / elapsed) if elapsed > 0 else None,
        }


def _ratio(a: float, b: float) -> float | None:
    return round(float(a) / float(b), 4) if b else None


def _ratios(a: np.ndarray, b: np.ndarray) -> list[float | None]:
    return [_ratio(x, y) for x, y in zip(a, b, strict=True)]
