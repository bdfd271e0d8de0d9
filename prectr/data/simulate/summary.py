"""The world's summary: the numbers that show each phenomenon the simulator carries.

CTR by grade and by position (relevance and position bias), the grade mix of the broad set,
the pool and the exposed top-k against real ESCI judgments (exposure bias), exact items per pool,
CTR by grade for strict and tolerant requests and the query's share of tolerance's variance
(query-level tolerance), the cold-start share (Zipf activity), the share of test requests whose
query never occurs in training (long tail), the share of test impressions on items unseen in
training (supply turnover), and the share of labelled pairs.
"""

from __future__ import annotations

import numpy as np

from prectr.data.history import COLD_START_MAX_EARLIER, earlier_requests
from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.state import WorldState
from prectr.data.simulate.vocabulary import esci_grade_shares

TOLERANCE_GROUPS = ("strict", "middle", "tolerant")


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
        self.tolerance_group = np.digitize(state.requests.tolerance, [-1 / 3, 1 / 3])
        self.last_train_day = config.n_days - config.valid_days - config.test_days - 1
        self.test = state.requests.day >= config.n_days - config.test_days
        self.broad_by_grade = np.zeros(4, dtype=np.int64)
        self.exact_per_pool = np.zeros(config.n_requests, dtype=np.int64)

    def add(self, c: dict, broad: dict) -> None:
        self.broad_by_grade += np.bincount(broad["grade"], minlength=4)
        self.exact_per_pool += np.bincount(
            c["request_id"][(c["grade"] == 3) & (c["position"] <= self.config.pool_size)],
            minlength=self.exact_per_pool.size,
        )
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
        cell = self.tolerance_group[c["request_id"]] * 4 + grade
        self.exposed_by_tolerance += np.bincount(cell[exposed], minlength=12).reshape(3, 4)
        self.clicks_by_tolerance += np.bincount(cell[exposed & click], minlength=12).reshape(3, 4)
        self.labelled += int(c["labelled"].sum())
        test = self.test[c["request_id"]]
        new = self.state.catalogue.launch_day[c["item_id"]] > self.last_train_day
        self.test_pool += [int(test.sum()), int((test & new).sum())]
        self.test_exposed += [int((test & exposed).sum()), int((test & exposed & new).sum())]

    def summary(self, elapsed: float) -> dict:
        req = self.state.requests
        earlier = earlier_requests(req.user)
        cold = earlier <= COLD_START_MAX_EARLIER
        test = self.test
        n_pool = int(self.pool_by_grade.sum())
        n_broad = int(self.broad_by_grade.sum())
        trained = np.zeros(len(self.state.queries.text), dtype=bool)
        trained[req.query[req.day <= self.last_train_day]] = True
        exact = self.exact_per_pool
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
            "tolerance_query_share": _query_share(
                req.query_tolerance, self.state.population.tolerance[req.user]
            ),
            "grade_mix": {
                "broad": _ratios(self.broad_by_grade, np.full(4, n_broad)),
                "pool": _ratios(self.pool_by_grade, np.full(4, n_pool)),
                "exposed": _ratios(self.exposed_by_grade, np.full(4, n_exposed)),
                "esci_judged": [round(esci[g], 4) for g in range(4)],
            },
            "exact_per_pool": {
                "mean": round(float(exact.mean()), 2),
                "none": _ratio((exact == 0).sum(), exact.size),
                "20_or_more": _ratio((exact >= 20).sum(), exact.size),
            },
            "test_unseen_query_share": _ratio((test & ~trained[req.query]).sum(), test.sum()),
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


def _query_share(query_part: np.ndarray, user_part: np.ndarray) -> float | None:
    """Over requests, the query part's share of the variance of tolerance (before clipping)."""
    total = query_part.var() + user_part.var()
    return round(float(query_part.var() / total), 4) if total > 0 else None


def _ratio(a: float, b: float) -> float | None:
    return round(float(a) / float(b), 4) if b else None


def _ratios(a: np.ndarray, b: np.ndarray) -> list[float | None]:
    return [_ratio(x, y) for x, y in zip(a, b, strict=True)]
