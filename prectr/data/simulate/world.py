"""Generating a world's search log, and replaying a new ranking in it (the online proxy).

A world directory holds the schema's tables (``items.parquet``, ``requests.parquet``,
``impressions/part-*.parquet``), ``world.json`` (knobs, split days, summary) and ``truth/`` with
the latent state that clicks are drawn from (users' tolerance and taste, items' attributes and
popularity, queries' intents). ``truth/`` and the impressions' ``true_relevance`` and
``logging_score`` columns are for evaluation and replay only: no model or feature may read them.

Generation is vectorised over chunks of requests, each chunk seeded from ``(seed, chunk)``, so
the same knobs give the same bytes; impressions stream to disk chunk by chunk.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from prectr import __version__
from prectr.data.schema import SearchLog
from prectr.data.simulate.catalogue import Catalogue, QueryPool, build_catalogue, true_grade
from prectr.data.simulate.clicks import ClickModel, attraction
from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.population import Population, build_population, query_tolerance
from prectr.data.simulate.summary import SummaryCounter
from prectr.io import atomic_dir

DAY_MS = 86_400_000
SLICE_CANDIDATES = 2_000_000  # retrieval draws generated at once (bounds memory)
SLICES_MAX = 1 << 20  # slices per chunk, for the seed of each slice's stream
STREAMS = {"catalogue": 0, "population": 1, "requests": 2, "chunk": 3, "replay": 4, "drift": 5}


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream], index])


def _hash_uniform(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (a, b) pair, the same wherever it occurs (splitmix64)."""
    with np.errstate(over="ignore"):
        x = (a.astype(np.uint64) << np.uint64(32)) ^ b.astype(np.uint64) ^ np.uint64(seed)
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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


class _Retrieval:
    """The retrieval stage: for each day, the items available then (launched, not yet sold),
    grouped by the query's category, kind, department and overall, in one flat index array.

    A group key is ``offset[group] + code``; ``start[day, key]`` and ``count[day, key]`` give
    its slice of ``flat`` on that day.
    """

    GROUPS = ("category", "kind", "department", "all")

    def __init__(self, catalogue: Catalogue, n_days: int):
        codes = (catalogue.category, catalogue.kind, catalogue.department,
                 np.zeros(catalogue.size, dtype=np.int64))  # fmt: skip
        sizes = [int(c.max()) + 1 for c in codes]
        self.offset = np.cumsum([0, *sizes])[:-1]
        self.start = np.zeros((n_days, sum(sizes)), dtype=np.int64)
        self.count = np.zeros((n_days, sum(sizes)), dtype=np.int64)
        flat, base = [], 0
        for day in range(n_days):
            live = np.flatnonzero((catalogue.launch_day <= day) & (catalogue.end_day > day))
            if live.size == 0:
                raise ValueError(f"no item is available on day {day}: raise item_lifetime_days")
            for g, code in enumerate(codes):
                key = code[live]
                order = live[np.argsort(key, kind="stable")]
                count = np.bincount(key, minlength=sizes[g])
                keys = slice(self.offset[g], self.offset[g] + sizes[g])
                self.start[day, keys] = base + np.cumsum(count) - count
                self.count[day, keys] = count
                flat.append(order)
                base += order.size
        self.flat = np.concatenate(flat).astype(np.int32)

    def keys(self, queries: QueryPool, query: np.ndarray) -> np.ndarray:
        """Each request's group key per group, ``(n, 4)``."""
        codes = (queries.category, queries.kind, queries.department, np.zeros_like(queries.kind))
        return np.stack([c[query] for c in codes], axis=1) + self.offset

    def draw(self, key: np.ndarray, day: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Uniformly drawn available items of group ``key`` ``(n, m)`` on ``day`` ``(n,)``; an
        empty group falls back to every available item."""
        count = self.count[day[:, None], key]
        empty = count == 0
        if empty.any():
            key = np.where(empty, self.offset[-1], key)
            count = self.count[day[:, None], key]
        pick = self.start[day[:, None], key] + (u * count).astype(np.int64)
        return self.flat[pick].astype(np.int64)


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
        catalogue, queries = build_catalogue(config, _rng(config.seed, "catalogue"))
        n_styles = int(catalogue.attributes[:, 2].max()) + 1
        population = build_population(
            config, _rng(config.seed, "population"), len(catalogue.departments), max(n_styles, 10)
        )
        return cls(config, catalogue, queries, population, _requests(config, queries, population))


def _requests(config: WorldConfig, queries: QueryPool, population: Population) -> Requests:
    """Who searches what, when: a day, a user by activity, then a query by the user's segment
    and the query's popularity that day (or, with ``new_query_share``, a query new that day)."""
    rng = _rng(config.seed, "requests")
    drift_rng = _rng(config.seed, "drift")
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


def _distinct(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's draws sorted, and which of them are a first occurrence (the distinct ones)."""
    items = np.sort(items, axis=1)
    first = np.ones(items.shape, dtype=bool)
    first[:, 1:] = items[:, 1:] != items[:, :-1]
    return items, first


def _cascade(state: WorldState, retrieval: _Retrieval, rows: slice, index: int) -> dict:
    """Retrieval, pre-ranking, logging-ranker exposure and clicks for a slice of requests."""
    cfg, cat, q, pop, req = (
        state.config, state.catalogue, state.queries, state.population, state.requests,
    )  # fmt: skip
    rng = _rng(cfg.seed, "chunk", index)
    query, user, day = req.query[rows], req.user[rows], req.day[rows]
    n, r, p, k = query.size, cfg.retrieval_size, cfg.pool_size, cfg.exposed_k

    # Retrieval (the broad set): r draws from the query's category, its kind, its department or
    # anything, by the pool_same_* shares; an item drawn twice counts once.
    shares = np.cumsum([cfg.pool_same_category, cfg.pool_same_kind, cfg.pool_same_department])
    source = rng.random((n, r), dtype=np.float32)
    group = sum((source >= share).astype(np.int8) for share in shares)
    key = np.take_along_axis(retrieval.keys(q, query), group, axis=1)
    broad, broad_valid = _distinct(retrieval.draw(key, day, rng.random((n, r), dtype=np.float32)))
    broad_grade = true_grade(cat, q, query[:, None], broad)

    # The pre-ranker: a cheap, noisy score of relevance and popularity keeps the top p.
    if r > p:
        score = (
            cfg.prerank_relevance_weight * broad_grade
            + cfg.ranker_popularity_weight * cat.popularity[broad]
            + rng.normal(0.0, cfg.prerank_noise, size=(n, r)).astype(np.float32)
        )
        keep = np.argpartition(-np.where(broad_valid, score, -np.inf), p - 1, axis=1)[:, :p]
        items, grade, valid = (np.take_along_axis(a, keep, axis=1)
                               for a in (broad, broad_grade, broad_valid))  # fmt: skip
    else:
        items, grade, valid = broad, broad_grade, broad_valid

    # The logging ranker: a noisy score of relevance and popularity; it exposes the top k.
    score = (
        cfg.ranker_relevance_weight * grade
        + cfg.ranker_popularity_weight * cat.popularity[items]
        + rng.normal(0.0, cfg.ranker_noise, size=(n, p))
    )
    score = np.where(valid, score, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    items, grade, score, valid = (
        np.take_along_axis(a, order, axis=1) for a in (items, grade, score, valid)
    )
    exposed = (np.arange(p) < k) & valid

    # Clicks on the exposed top k.
    taste = pop.taste(user[:, None], cat.attributes[items[:, :k], 2], cat.price_z[items[:, :k]])
    attract = attraction(
        grade[:, :k], req.tolerance[rows][:, None], taste, cat.popularity[items[:, :k]],
        cfg.tolerance_strength, cfg.taste_weight, cfg.popularity_weight,
    )  # fmt: skip
    attract = np.where(exposed[:, :k], attract, 0.0)
    clicks = np.zeros((n, p), dtype=np.int8)
    clicks[:, :k] = ClickModel(cfg.click_model, cfg.eta, cfg.dcm_lambda).sample(attract, rng)

    graded = _hash_uniform(query[:, None], items, cfg.seed) < cfg.label_share
    labelled = graded & exposed if cfg.label_scope == "exposed" else graded
    request_id = np.arange(rows.start, rows.stop)
    columns = {
        "request_id": np.repeat(request_id, p).reshape(n, p)[valid],
        "item_id": items[valid],
        "position": np.broadcast_to(np.arange(1, p + 1), (n, p))[valid],
        "exposed": exposed[valid],
        "click": clicks[valid],
        "labelled": labelled[valid],
        "grade": grade[valid],
        "score": score[valid],
    }
    if cfg.label_scope == "broad":
        columns = _graded_from_broad(state, rows, broad, broad_grade, broad_valid, items, columns)
    return {"log": columns, "broad": _broad_sample(state, rows, broad, broad_grade, broad_valid,
                                                   rng)}  # fmt: skip


def _graded_from_broad(state, rows, broad, broad_grade, broad_valid, pool, columns) -> dict:
    """``label_scope = broad``: graded pairs of the broad set that the pool lacks join the log
    of training days as unexposed candidates (evaluation days keep their pools unchanged)."""
    cfg, req = state.config, state.requests
    query, day = req.query[rows], req.day[rows]
    row = np.arange(broad.shape[0], dtype=np.int64)[:, None] * state.catalogue.size
    in_pool = np.isin(row + broad, row + pool)
    train = (day < cfg.n_days - cfg.valid_days - cfg.test_days)[:, None]
    graded = _hash_uniform(query[:, None], broad, cfg.seed) < cfg.label_share
    extra = graded & broad_valid & ~in_pool & train
    n_extra = int(extra.sum())
    added = {
        "request_id": np.broadcast_to(np.arange(rows.start, rows.stop)[:, None], broad.shape)[
            extra
        ],
        "item_id": broad[extra],
        "position": np.full(n_extra, cfg.pool_size + 1),
        "exposed": np.zeros(n_extra, dtype=bool),
        "click": np.zeros(n_extra, dtype=np.int8),
        "labelled": np.ones(n_extra, dtype=bool),
        "grade": broad_grade[extra],
        "score": np.full(n_extra, -np.inf),
    }
    merged = {name: np.concatenate([columns[name], added[name]]) for name in columns}
    order = np.argsort(merged["request_id"], kind="stable")
    return {name: values[order] for name, values in merged.items()}


def _broad_sample(state, rows, broad, broad_grade, broad_valid, rng) -> dict:
    """For the chosen evaluation requests, a uniform sample of their broad set."""
    cfg, req = state.config, state.requests
    chosen = np.flatnonzero(req.broad[rows])
    size = min(cfg.broad_sample, broad.shape[1])
    items, grade, valid = broad[chosen], broad_grade[chosen], broad_valid[chosen]
    if size < broad.shape[1] and chosen.size:
        priority = np.where(valid, rng.random(items.shape, dtype=np.float32), -1.0)
        keep = np.argpartition(-priority, size - 1, axis=1)[:, :size]
        items, grade, valid = (np.take_along_axis(a, keep, axis=1) for a in (items, grade, valid))
    request_id = np.broadcast_to((rows.start + chosen)[:, None], items.shape)
    return {"request_id": request_id[valid], "item_id": items[valid], "grade": grade[valid]}


def _chunk(state: WorldState, retrieval: _Retrieval, rows: slice, index: int) -> dict:
    """A chunk of requests, generated in slices of bounded size (a broad set of a few thousand
    candidates per request would not fit otherwise); each slice has its own seeded stream."""
    step = max(1, SLICE_CANDIDATES // state.config.retrieval_size)
    parts = [
        _cascade(state, retrieval, slice(s, min(s + step, rows.stop)), index * SLICES_MAX + i)
        for i, s in enumerate(range(rows.start, rows.stop, step))
    ]
    return {
        part: {name: np.concatenate([x[part][name] for x in parts]) for name in parts[0][part]}
        for part in ("log", "broad")
    }


def _impressions_table(c: dict) -> pa.Table:
    unexposed = ~c["exposed"]
    source = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(c["labelled"].size, dtype=np.int8), mask=~c["labelled"]),
        pa.array(["human"]),
    )
    return pa.table(
        {
            "request_id": pa.array(c["request_id"], pa.int64()),
            "item_id": pa.array(c["item_id"], pa.int64()),
            "position": pa.array(c["position"].astype(np.int32), mask=unexposed),
            "click": pa.array(c["click"], mask=unexposed),
            "relevance": pa.array(c["grade"], mask=~c["labelled"]),
            "relevance_source": source.cast(pa.string()),
            "true_relevance": pa.array(c["grade"]),
            "logging_score": pa.array(c["score"]),
        }
    )


BROAD_SCHEMA = pa.schema(
    [("request_id", pa.int64()), ("item_id", pa.int64()), ("true_relevance", pa.int8())]
)


def _broad_table(c: dict) -> pa.Table:
    columns = (c["request_id"], c["item_id"], c["grade"])
    return pa.Table.from_arrays([pa.array(v) for v in columns], schema=BROAD_SCHEMA)


def _static_tables(state: WorldState) -> dict[str, pa.Table]:
    cat, q, pop, req, cfg = (
        state.catalogue, state.queries, state.population, state.requests, state.config,
    )  # fmt: skip
    names = [c.name for c in cat.categories]
    item_id = np.arange(cat.size, dtype=np.int64)
    kinds = ("color", "material", "style")
    return {
        "items.parquet": pa.table(
            {
                "item_id": item_id,
                "title": cat.titles,
                "category": pa.array(names).take(cat.category),
                "brand": pa.array(cat.brands).take(cat.brand),
                "price": cat.price,
            }
        ),
        "requests.parquet": pa.table(
            {
                "request_id": np.arange(cfg.n_requests, dtype=np.int64),
                "user_id": req.user.astype(np.int64),
                "query": pa.array(q.text).take(req.query),
                "timestamp": pa.array(req.timestamp_ms, pa.timestamp("ms")),
                "query_category": pa.array(names).take(req.logged_category),
            }
        ),
        "truth/items.parquet": pa.table(
            {
                "item_id": item_id,
                "department": pa.array(cat.departments).take(cat.department),
                **{k: cat.attributes[:, i] for i, k in enumerate(kinds)},
                "brand_code": cat.brand,
                "popularity": cat.popularity,
                "price_z": cat.price_z,
                "launch_day": cat.launch_day,
                "end_day": cat.end_day,
            }
        ),
        "truth/requests.parquet": pa.table(
            {
                "request_id": np.arange(cfg.n_requests, dtype=np.int64),
                "day": req.day,
                "query_index": req.query,
                "tolerance": req.tolerance,
                "query_tolerance": req.query_tolerance.astype(np.float64),
                "broad_sample": req.broad,
            }
        ),
        "truth/users.parquet": pa.table(
            {
                "user_id": np.arange(pop.size, dtype=np.int64),
                "segment": pop.segment,
                "user_tolerance": pop.tolerance,
                "price_sensitivity": pop.price_sensitivity,
                "activity": pop.activity,
                "style_affinity": pa.FixedSizeListArray.from_arrays(
                    pop.style_affinity.ravel(), pop.style_affinity.shape[1]
                ),
            }
        ),
        "truth/queries.parquet": pa.table(
            {
                "query": q.text,
                "category": pa.array(names).take(q.category),
                **{k: q.attributes[:, i] for i, k in enumerate(kinds)},
                "brand_code": q.brand,
                "weight": q.weight,
                "is_real": q.is_real,
                "birth_day": q.birth_day,
                "stated": q.stated,
            }
        ),
    }


def simulate(
    config: WorldConfig,
    out: str | Path,
    overwrite: bool = False,
    validate: bool = True,
    preset: str | None = None,
) -> dict:
    """Generate a world into ``out`` (atomically: all of it, or nothing); return its summary.
    ``preset`` only names the world's preset in ``world.json``."""
    started = time.perf_counter()
    state = WorldState.build(config)
    retrieval = _Retrieval(state.catalogue, config.n_days)
    counter = SummaryCounter(config, state)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "truth" / "broad").mkdir(parents=True)
        (tmp / "impressions").mkdir()
        static = _static_tables(state)
        for name, table in static.items():
            pq.write_table(table, tmp / name)
        starts = range(0, config.n_requests, config.chunk_requests)
        for index, start in enumerate(starts):
            rows = slice(start, min(start + config.chunk_requests, config.n_requests))
            generated = _chunk(state, retrieval, rows, index)
            columns = generated["log"]
            counter.add(columns, generated["broad"])
            part_name = f"part-{index:05d}.parquet"
            if generated["broad"]["request_id"].size:
                broad = _broad_table(generated["broad"])
                pq.write_table(broad, tmp / "truth" / "broad" / part_name)
            part = tmp / "impressions" / part_name
            table = _impressions_table(columns)
            if validate:
                # A request never spans parts, so checking each part against the whole items
                # and requests tables checks the whole log, in bounded memory.
                SearchLog(
                    static["items.parquet"],
                    static["requests.parquet"],
                    table,
                    {"impressions": [(str(part), table.num_rows)]},
                ).check()
            pq.write_table(table, part)
        summary = counter.summary(elapsed=time.perf_counter() - started)
        meta = {
            "prectr_version": __version__,
            "preset": preset,
            "config": asdict(config),
            "split": split_days(config),
            "summary": summary,
        }
        (tmp / "world.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def split_days(config: WorldConfig) -> dict[str, list[int]]:
    """Time split: train on the earlier days, validate on the next ``valid_days``, test on the
    last ``test_days``."""
    test_from = config.n_days - config.test_days
    valid_from = test_from - config.valid_days
    return {
        "train": list(range(valid_from)),
        "valid": list(range(valid_from, test_from)),
        "test": list(range(test_from, config.n_days)),
    }


@dataclass
class ReplayResult:
    """Per request: expected clicks (closed form) and sampled clicks of the new top k."""

    per_request: pa.Table

    @property
    def expected_clicks(self) -> float:
        return float(pc.mean(self.per_request["expected_clicks"]).as_py())

    @property
    def clicks(self) -> float:
        return float(pc.mean(self.per_request["clicks"]).as_py())


class World:
    """A generated world on disk: its log, its knobs, and the truth to replay rankings in."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "world.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.root}: not a simulated world (no world.json)")
        self.meta = json.loads(meta_path.read_text())
        self.config = WorldConfig(**self.meta["config"])
        self.click_model = ClickModel(
            self.config.click_model, self.config.eta, self.config.dcm_lambda
        )

    @property
    def split(self) -> dict[str, list[int]]:
        return self.meta["split"]

    def requests(self, days: list[int] | None = None) -> pa.Table:
        table = pq.read_table(self.root / "requests.parquet")
        if days is None:
            return table
        return table.filter(pc.is_in(self.day_of(table["timestamp"]), pa.array(days, pa.int64())))

    def day_of(self, timestamp: pa.ChunkedArray) -> pa.ChunkedArray:
        start = datetime.fromisoformat(self.config.start_date).replace(tzinfo=UTC)
        ms = pc.cast(pc.cast(timestamp, pa.timestamp("ms")), pa.int64())
        return pc.divide(pc.subtract(ms, int(start.timestamp() * 1000)), DAY_MS)

    def impressions(self, request_ids: pa.Array | None = None, columns=None) -> pa.Table:
        dataset = ds.dataset(self.root / "impressions", format="parquet")
        filt = None if request_ids is None else pc.field("request_id").isin(request_ids)
        return dataset.to_table(columns=columns, filter=filt)

    def broad(self, request_ids: pa.Array | None = None) -> pa.Table:
        """The kept broad-set samples (request_id, item_id, true_relevance): for
        ``broad_requests`` requests of each validation and test day, ``broad_sample`` candidates
        drawn uniformly from all that retrieval returned (most of them never logged)."""
        dataset = ds.dataset(self.root / "truth" / "broad", format="parquet", schema=BROAD_SCHEMA)
        filt = None if request_ids is None else pc.field("request_id").isin(request_ids)
        return dataset.to_table(filter=filt)

    def replay(self, scores: pa.Table, seed: int = 0, candidates: str = "pool") -> ReplayResult:
        """Rank each scored request's candidates by ``scores`` (request_id, item_id, score),
        expose the new top k, and draw clicks from the world's click model.

        ``candidates``: ``pool``, the logged pool (impressions), or ``broad``, the kept
        broad-set sample; the scores must cover every candidate of each scored request.
        """
        if candidates not in ("pool", "broad"):
            raise ValueError(f"candidates {candidates!r}: expected pool or broad")
        requests = pc.unique(scores["request_id"])
        pool = (
            self.impressions(requests, ["request_id", "item_id", "true_relevance"])
            if candidates == "pool"
            else self.broad(requests)
        )
        joined = pool.join(scores.select(["request_id", "item_id", "score"]),
                           keys=["request_id", "item_id"], join_type="left outer")  # fmt: skip
        missing = joined["score"].null_count
        if missing:
            raise ValueError(
                f"scores miss {missing} {candidates} candidates of the scored requests"
            )
        users = pq.read_table(self.root / "truth" / "users.parquet")
        items = pq.read_table(self.root / "truth" / "items.parquet")
        truth = pq.read_table(self.root / "truth" / "requests.parquet")
        tolerance = truth["tolerance"].to_numpy()  # indexed by request id (0..n-1)
        request_user = self.requests().select(["request_id", "user_id"])
        joined = joined.join(request_user, keys="request_id")
        req = joined["request_id"].to_numpy()
        order = np.lexsort((-joined["score"].to_numpy(), req))
        req = req[order]
        first = np.r_[True, req[1:] != req[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(req.size) - np.repeat(starts, np.diff(np.r_[starts, req.size]))
        k = self.config.exposed_k
        top = order[rank < k]
        row = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, req.size]))[rank < k]
        col = rank[rank < k]
        user = joined["user_id"].to_numpy()[top]
        item = joined["item_id"].to_numpy()[top]
        grade = joined["true_relevance"].to_numpy()[top]
        affinity = users["style_affinity"].combine_chunks().flatten().to_numpy()
        affinity = affinity.reshape(users.num_rows, -1)
        style = items["style"].to_numpy()[item]
        taste = (
            affinity[user, style]
            - users["price_sensitivity"].to_numpy()[user] * items["price_z"].to_numpy()[item]
        )
        cfg = self.config
        a = attraction(
            grade, tolerance[joined["request_id"].to_numpy()[top]], taste,
            items["popularity"].to_numpy()[item],
            cfg.tolerance_strength, cfg.taste_weight, cfg.popularity_weight,
        )  # fmt: skip
        ranked = np.zeros((starts.size, k))
        ranked[row, col] = a
        expected = self.click_model.expected_clicks(ranked).sum(axis=1)
        sampled = self.click_model.sample(ranked, _rng(seed, "replay")).sum(axis=1)
        return ReplayResult(
            pa.table(
                {
                    "request_id": req[starts],
                    "expected_clicks": expected,
                    "clicks": sampled.astype(np.int64),
                }
            )
        )
