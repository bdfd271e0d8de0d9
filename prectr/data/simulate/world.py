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
from prectr.data.simulate.population import Population, build_population
from prectr.data.simulate.summary import SummaryCounter
from prectr.io import atomic_dir

DAY_MS = 86_400_000
POOL_OVERSAMPLE = 1.25  # draws per pool slot before duplicates are removed
STREAMS = {"catalogue": 0, "population": 1, "requests": 2, "chunk": 3, "replay": 4}


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


class _Retrieval:
    """The coarse retrieval: items by category, by department and overall, each sorted by launch
    day so the items available on day ``d`` form a prefix of each slice."""

    def __init__(self, catalogue: Catalogue, n_days: int):
        days = np.arange(n_days)
        self.groups = {}
        for name, key, n_keys in (
            ("category", catalogue.category, len(catalogue.categories)),
            ("kind", catalogue.kind, int(catalogue.kind.max()) + 1),
            ("department", catalogue.department, len(catalogue.departments)),
            ("all", np.zeros(catalogue.size, dtype=np.int64), 1),
        ):
            order = np.lexsort((catalogue.launch_day, key))
            starts = np.searchsorted(key[order], np.arange(n_keys))
            available = np.stack(
                [
                    np.searchsorted(catalogue.launch_day[order][key[order] == k], days, "right")
                    for k in range(n_keys)
                ]
            )
            self.groups[name] = (order, starts, available)

    def draw(self, name: str, key: np.ndarray, day: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Uniformly drawn available items of group ``key`` on ``day`` (-1 where none)."""
        order, starts, available = self.groups[name]
        n = available[key, day]
        pick = starts[key] + np.minimum((u * n).astype(np.int64), np.maximum(n - 1, 0))
        return np.where(n > 0, order[np.minimum(pick, order.size - 1)], -1)


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
    rng = _rng(config.seed, "requests")
    n = config.n_requests
    user = rng.choice(population.size, size=n, p=population.activity)
    segment = population.segment[user]
    query = np.empty(n, dtype=np.int64)
    n_departments = population.department_preference.shape[1]
    for s in range(config.n_segments):
        rows = np.flatnonzero(segment == s)
        taste = 0.2 + n_departments * population.department_preference[s, queries.department]
        cdf = np.cumsum(queries.weight * taste)
        query[rows] = np.searchsorted(cdf, rng.random(rows.size) * cdf[-1], side="right")
    query = np.minimum(query, len(queries.text) - 1)
    day = rng.integers(config.n_days, size=n)
    ms = day * DAY_MS + rng.integers(DAY_MS, size=n)
    order = np.argsort(ms, kind="stable")
    user, query, day, ms = user[order], query[order], day[order], ms[order]
    start = int(datetime.fromisoformat(config.start_date).replace(tzinfo=UTC).timestamp() * 1000)
    n_categories = int(queries.category.max()) + 1
    wrong = rng.random(n) >= config.query_classifier_accuracy
    logged = np.where(wrong, rng.integers(n_categories, size=n), queries.category[query])
    return Requests(user, query, day, ms + start, logged)


def _chunk(state: WorldState, retrieval: _Retrieval, rows: slice, index: int) -> dict:
    """Pools, logging-ranker exposure and clicks for a chunk of requests, as columns."""
    cfg, cat, q, pop, req = (
        state.config, state.catalogue, state.queries, state.population, state.requests,
    )  # fmt: skip
    rng = _rng(cfg.seed, "chunk", index)
    query, user, day = req.query[rows], req.user[rows], req.day[rows]
    n, p, k = query.size, cfg.pool_size, cfg.exposed_k
    m = int(np.ceil(p * POOL_OVERSAMPLE))

    # Candidate pool: drawn from the query's category, its kind, its department, then anything;
    # the narrower source wins where it has an available item.
    source = rng.random((n, m))
    u = rng.random((n, m))
    shape = (n, m)
    days = np.broadcast_to(day[:, None], shape)
    items = retrieval.draw("all", np.zeros(shape, dtype=np.int64), days, u)
    share = np.cumsum([cfg.pool_same_category, cfg.pool_same_kind, cfg.pool_same_department])
    for group, key, upto in reversed(
        (("category", q.category, share[0]), ("kind", q.kind, share[1]),
         ("department", q.department, share[2]))
    ):  # fmt: skip
        drawn = retrieval.draw(group, np.broadcast_to(key[query][:, None], shape), days, u)
        items = np.where((source < upto) & (drawn >= 0), drawn, items)

    # Remove duplicates within a request, then keep a random p of the rest.
    items = np.sort(items, axis=1)
    duplicate = np.zeros((n, m), dtype=bool)
    duplicate[:, 1:] = items[:, 1:] == items[:, :-1]
    priority = np.where(duplicate, -1.0, rng.random((n, m)))
    keep = np.argpartition(-priority, p - 1, axis=1)[:, :p]
    items = np.take_along_axis(items, keep, axis=1)
    valid = ~np.take_along_axis(duplicate, keep, axis=1)

    # The logging ranker: a noisy score of relevance and popularity; it exposes the top k.
    grade = true_grade(cat, q, query[:, None], items)
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
        grade[:, :k], pop.tolerance[user][:, None], taste, cat.popularity[items[:, :k]],
        cfg.tolerance_strength, cfg.taste_weight, cfg.popularity_weight,
    )  # fmt: skip
    attract = np.where(exposed[:, :k], attract, 0.0)
    clicks = np.zeros((n, p), dtype=np.int8)
    clicks[:, :k] = ClickModel(cfg.click_model, cfg.eta, cfg.dcm_lambda).sample(attract, rng)

    labelled = _hash_uniform(query[:, None], items, cfg.seed) < cfg.label_share
    request_id = np.arange(rows.start, rows.stop)
    return {
        "request_id": np.repeat(request_id, p).reshape(n, p)[valid],
        "item_id": items[valid],
        "position": np.broadcast_to(np.arange(1, p + 1), (n, p))[valid],
        "exposed": exposed[valid],
        "click": clicks[valid],
        "labelled": labelled[valid],
        "grade": grade[valid],
        "score": score[valid],
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
            }
        ),
        "truth/users.parquet": pa.table(
            {
                "user_id": np.arange(pop.size, dtype=np.int64),
                "segment": pop.segment,
                "tolerance": pop.tolerance,
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
            }
        ),
    }


def simulate(
    config: WorldConfig, out: str | Path, overwrite: bool = False, validate: bool = True
) -> dict:
    """Generate a world into ``out`` (atomically: all of it, or nothing); return its summary."""
    started = time.perf_counter()
    state = WorldState.build(config)
    retrieval = _Retrieval(state.catalogue, config.n_days)
    counter = SummaryCounter(config, state)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "truth").mkdir()
        (tmp / "impressions").mkdir()
        static = _static_tables(state)
        for name, table in static.items():
            pq.write_table(table, tmp / name)
        starts = range(0, config.n_requests, config.chunk_requests)
        for index, start in enumerate(starts):
            rows = slice(start, min(start + config.chunk_requests, config.n_requests))
            columns = _chunk(state, retrieval, rows, index)
            counter.add(columns)
            part = tmp / "impressions" / f"part-{index:05d}.parquet"
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
            "config": asdict(config),
            "split": split_days(config.n_days),
            "summary": summary,
        }
        (tmp / "world.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def split_days(n_days: int) -> dict[str, list[int]]:
    """Time split: train on the earlier days, validate on the next one, test on the last one."""
    return {"train": list(range(n_days - 2)), "valid": [n_days - 2], "test": [n_days - 1]}


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

    def replay(self, scores: pa.Table, seed: int = 0) -> ReplayResult:
        """Rank each scored request's pool by ``scores`` (request_id, item_id, score), expose
        the new top k, and draw clicks from the world's click model."""
        requests = pc.unique(scores["request_id"])
        pool = self.impressions(requests, ["request_id", "item_id", "true_relevance"])
        joined = pool.join(scores.select(["request_id", "item_id", "score"]),
                           keys=["request_id", "item_id"], join_type="left outer")  # fmt: skip
        missing = joined["score"].null_count
        if missing:
            raise ValueError(f"scores miss {missing} pool candidates of the scored requests")
        users = pq.read_table(self.root / "truth" / "users.parquet")
        items = pq.read_table(self.root / "truth" / "items.parquet")
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
            grade, users["tolerance"].to_numpy()[user], taste, items["popularity"].to_numpy()[item],
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
