"""The latent state a simulated world is generated from, rebuilt from its knobs alone: the
catalogue, the queries, the population and the requests (who searches what, when), each drawn
from its own seeded stream (:func:`stream_rng`); and the time split of its days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from prectr.data import shards
from prectr.data.simulate.catalogue import Catalogue, QueryPool, build_catalogue
from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.population import Population, build_population, query_tolerance

DAY_MS = 86_400_000
STREAMS = {"catalogue": 0, "population": 1, "requests": 2, "chunk": 3, "replay": 4, "drift": 5}


def stream_rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """The random stream ``stream`` (one of :data:`STREAMS`) of a world's ``seed``, part
    ``index``: the same numbers wherever it is drawn."""
    return np.random.default_rng([seed, STREAMS[stream], index])


@dataclass
class Requests:
    user: np.ndarray
    query: np.ndarray
    day: np.ndarray
    timestamp_ms: np.ndarray
    logged_category: np.ndarray  # the engine's query classifier output (noisy)
    tolerance: np.ndarray  # the request's tolerance: user + query parts on its day, clipped
    query_tolerance: np.ndarray  # the query part alone (what the crowd under the query shares)
    broad: np.ndarray  # whether the request's broad-set sample is kept (evaluation days only)


@dataclass
class WorldState:
    """Everything a world is generated from; rebuilt from the knobs alone."""

    config: WorldConfig
    catalogue: Catalogue
    queries: QueryPool
    population: Population
    requests: Requests

    @classmethod
    def build(cls, config: WorldConfig) -> WorldState:
        catalogue, queries = build_catalogue(config, stream_rng(config.seed, "catalogue"))
        n_styles = int(catalogue.attributes[:, 2].max()) + 1
        population = build_population(
            config,
            stream_rng(config.seed, "population"),
            len(catalogue.departments),
            max(n_styles, 10),
        )
        return cls(config, catalogue, queries, population, _requests(config, queries, population))


def _requests(config: WorldConfig, queries: QueryPool, population: Population) -> Requests:
    """Who searches what, when: a day, a user by activity, then a query by the user's segment
    and the query's popularity that day (or, with ``new_query_share``, a query new that day)."""
    rng = stream_rng(config.seed, "requests")
    drift_rng = stream_rng(config.seed, "drift")
    n, n_days = config.n_requests, config.n_days
    day = np.sort(rng.integers(n_days, size=n))
    user = rng.choice(population.size, size=n, p=population.activity)
    segment = population.segment[user]
    query = np.empty(n, dtype=np.int64)
    n_departments = population.department_preference.shape[1]
    log_drift = np.zeros(queries.weight.size)
    for d in range(n_days):
        if d:
            log_drift += drift_rng.normal(0.0, config.query_popularity_drift, log_drift.size)
        weight = np.where(queries.birth_day < d, queries.weight * np.exp(log_drift), 0.0)
        if d == 0:
            weight = np.where(queries.birth_day == 0, queries.weight, 0.0)
        newborn = np.flatnonzero(queries.birth_day == d) if d else np.zeros(0, dtype=np.int64)
        rows_today = day == d
        fresh = rows_today & (rng.random(n) < config.new_query_share) & (newborn.size > 0)
        if fresh.any():
            query[fresh] = newborn[rng.integers(newborn.size, size=int(fresh.sum()))]
        for s in range(config.n_segments):
            rows = np.flatnonzero(rows_today & ~fresh & (segment == s))
            taste = 0.2 + n_departments * population.department_preference[s, queries.department]
            cdf = np.cumsum(weight * taste)
            picked = np.searchsorted(cdf, rng.random(rows.size) * cdf[-1], side="right")
            query[rows] = np.minimum(picked, weight.size - 1)
    ms = day * DAY_MS + rng.integers(DAY_MS, size=n)
    order = np.argsort(ms, kind="stable")
    user, query, day, ms = user[order], query[order], day[order], ms[order]
    start = int(datetime.fromisoformat(config.start_date).replace(tzinfo=UTC).timestamp() * 1000)
    n_categories = int(queries.category.max()) + 1
    wrong = rng.random(n) >= config.query_classifier_accuracy
    logged = np.where(wrong, rng.integers(n_categories, size=n), queries.category[query])
    part = query_tolerance(config, drift_rng, queries.stated, population.tolerance)[query, day]
    tolerance = np.clip(population.tolerance[user] + part, -1.0, 1.0)
    split = split_days(config)
    broad = np.zeros(n, dtype=bool)
    for d in split["valid"] + split["test"]:
        rows = np.flatnonzero(day == d)
        broad[rng.permutation(rows)[: config.broad_requests]] = True
    return Requests(user, query, day, ms + start, logged, tolerance, part, broad)


def split_days(config: WorldConfig) -> dict[str, list[int]]:
    """Time split of the world's days 0..n_days-1 (:func:`prectr.data.shards.split_days`):
    train on the earlier days, validate on the next ``valid_days``, test on the last
    ``test_days``."""
    days = shards.split_days(np.arange(config.n_days), config.valid_days, config.test_days)
    return {name: of.tolist() for name, of in days.items()}
