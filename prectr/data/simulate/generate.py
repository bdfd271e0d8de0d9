"""Generating a world's search log: retrieval (the broad set), the pre-ranker (the logged
pool), the logging ranker's exposed top k and clicks, written as the schema's tables with the
world's truth beside them (:mod:`prectr.data.simulate.world`).

Generation is vectorised over chunks of requests, each chunk seeded from ``(seed, chunk)``, so
the same knobs give the same bytes; impressions stream to disk chunk by chunk.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prectr import __version__
from prectr.data.schema import SearchLog
from prectr.data.simulate.catalogue import Catalogue, QueryPool, true_grade
from prectr.data.simulate.clicks import ClickModel, attraction
from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.state import WorldState, split_days, stream_rng
from prectr.data.simulate.summary import SummaryCounter
from prectr.data.simulate.world import BROAD_SCHEMA
from prectr.io import atomic_dir

SLICE_CANDIDATES = 2_000_000  # retrieval draws generated at once (bounds memory)
SLICES_MAX = 1 << 20  # slices per chunk, for the seed of each slice's stream


def _hash_uniform(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (a, b) pair, the same wherever it occurs (splitmix64)."""
    with np.errstate(over="ignore"):
        x = (a.astype(np.uint64) << np.uint64(32)) ^ b.astype(np.uint64) ^ np.uint64(seed)
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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
    rng = stream_rng(cfg.seed, "chunk", index)
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
