"""Typed features built from the search-log schema, with vocabularies fitted on training data.

Features live where they vary: per item (ids, price, title tokens), per request (user, query,
query tokens, the user's history) and per impression (how well query and title match). Item and
request features are small tables kept in memory; impressions only carry row indices into them,
so a batch gathers its features and the log itself can stream from disk.

Vocabularies are fitted on the training requests only and saved beside the checkpoint; id 0 is
padding / missing and id 1 the out-of-vocabulary bucket, so unseen users, items, queries and
tokens never crash a lookup. No feature reads ``true_relevance`` or ``logging_score``.

Which features a config declares is :mod:`prectr.data.specs`'s; words and how a query matches a
title are :mod:`prectr.data.matching`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.history import Histories, HistoryIndex, HistoryKeys, HistoryState
from prectr.data.matching import (
    MATCH_LEVELS,
    match_level,
    ranges,
    token_overlap,
    tokens,
    word_counts,
)
from prectr.data.schema import SearchLog
from prectr.data.specs import (
    Categorical,
    FeatureConfig,
    Numeric,
    Sequence,
    feature_specs,
    undeclared,
)
from prectr.data.vocabulary import OOV, PAD, Vocabulary
from prectr.io import atomic_file
from prectr.text.cache import load_embedding_cache
from prectr.text.student_files import piece_limits, student_tokenizer
from prectr.words import count

__all__ = [
    "OOV",
    "PAD",
    "Categorical",
    "ChunkContext",
    "EncodedChunk",
    "EncodedLog",
    "FeatureConfig",
    "FeatureEncoder",
    "Numeric",
    "Sequence",
    "Vocabulary",
    "feature_specs",
    "match_level",
    "ranges",
    "undeclared",
]

PRICE_BUCKETS = 20


@dataclass
class EncodedLog:
    """A log's features: per-item and per-request matrices, and per-impression columns."""

    specs: list
    vocab_sizes: dict[str, int]
    item: dict[str, np.ndarray]  # name -> (n_items, ...) array
    request: dict[str, np.ndarray]  # name -> (n_requests, ...) array
    # request_row, item_row, impression numerics, labels, ids; None when the features were
    # reloaded from a run's cache (the impressions then live in the run's split files)
    impressions: pa.Table | None


@dataclass
class ChunkContext:
    """What encoding any chunk of a log reads besides the chunk (:meth:`FeatureEncoder.context`):
    the items table, its encoded features and the history keys of the log's requests."""

    items: pa.Table
    item: dict[str, np.ndarray]
    keys: HistoryKeys


@dataclass
class EncodedChunk:
    """A chunk of a log encoded (:meth:`FeatureEncoder.encode_chunk`): its requests' features,
    its impressions' columns, and the history state after it."""

    request: dict[str, np.ndarray]
    impressions: pa.Table
    state: HistoryState


class FeatureEncoder:
    """Fits vocabularies and numeric statistics on training requests; encodes any log."""

    def __init__(self, config: FeatureConfig | None = None):
        self.config = _with_piece_limits(config or FeatureConfig())
        self.vocabs: dict[str, Vocabulary] = {}
        self.stats: dict[str, float | list[float]] = {}
        self.has_query_category = False
        self.pieces = student_tokenizer(self.config.student) if self.config.student else None

    def fit(self, log: SearchLog, train_requests: np.ndarray) -> FeatureEncoder:
        """``train_requests``: row indices of ``log.requests`` used for fitting."""
        req = log.requests.take(pa.array(train_requests))
        imp = log.impressions.filter(pc.is_in(log.impressions["request_id"], req["request_id"]))
        seen = log.items.filter(pc.is_in(log.items["item_id"], pc.unique(imp["item_id"])))
        return self.fit_seen(req, seen)

    def fit_seen(self, req: pa.Table, seen: pa.Table) -> FeatureEncoder:
        """Fit on the training requests ``req`` and the items ``seen`` among their candidates
        (in the items table's order): all :meth:`fit` reads of a log, so a log read in chunks
        is fitted by gathering the two."""
        cfg = self.config
        self.has_query_category = "query_category" in req.column_names
        self.vocabs = {
            "user": Vocabulary.fit(req["user_id"], cfg.min_count),
            "query": Vocabulary.fit(req["query"], cfg.min_count),
            "item": Vocabulary.fit(seen["item_id"], cfg.min_count),
            "category": Vocabulary.fit(seen["category"]),
            "brand": Vocabulary.fit(seen["brand"], cfg.min_count),
            "price_bucket": Vocabulary(list(range(PRICE_BUCKETS))),
            "match_level": Vocabulary(list(range(MATCH_LEVELS))),
            "click": Vocabulary([0, 1]),
        }
        words = word_counts(req["query"], seen["title"])
        self.vocabs["token"] = Vocabulary.counted(words, cfg.token_min_count)
        if cfg.text_cache:  # ids follow the cache's rows
            self.vocabs["text"] = Vocabulary(load_embedding_cache(cfg.text_cache)[0])
        log_price = np.log1p(seen["price"].fill_null(np.nan).to_numpy(zero_copy_only=False))
        log_price = log_price[~np.isnan(log_price)]
        self.stats = {
            "log_price_mean": float(log_price.mean()) if log_price.size else 0.0,
            "log_price_std": float(log_price.std() + 1e-6) if log_price.size else 1.0,
            "price_edges": np.quantile(
                log_price, np.linspace(0, 1, PRICE_BUCKETS + 1)[1:-1]
            ).tolist()
            if log_price.size
            else [],
        }
        return self

    @property
    def specs(self) -> list:
        return feature_specs(self.config, self.has_query_category)

    def encode(self, log: SearchLog) -> EncodedLog:
        """Features of every item, request and impression of ``log`` (histories leak-free):
        the whole log as one chunk (:meth:`encode_chunk`)."""
        context = self.context(log.items, log.requests)
        chunk = self.encode_chunk(context, HistoryState.start(context.keys), log.requests,
                                  log.impressions)  # fmt: skip
        return EncodedLog(self.specs, self.vocab_sizes, context.item, chunk.request,
                          chunk.impressions)  # fmt: skip

    def context(self, items: pa.Table, requests: pa.Table | Iterable[pa.Table]) -> ChunkContext:
        """What encoding any chunk of a log reads besides the chunk: the items and their
        features, and the history keys of all the log's ``requests`` (a table, or its parts in
        order: :class:`HistoryKeys`)."""
        return ChunkContext(items, self.encode_items(items), HistoryKeys(requests))

    def encode_chunk(
        self, context: ChunkContext, state: HistoryState, requests: pa.Table,
        impressions: pa.Table, first_row: int = 0,
    ) -> EncodedChunk:  # fmt: skip
        """Encode a chunk of a log: ``requests`` (rows ``first_row`` on of the log's requests
        in the encoding's order), all their ``impressions``, and ``state``, the events before
        them that a history can still show (every one earlier than every request of the
        chunk). What it returns is a function of its arguments alone: chunks can be encoded
        apart once their states are known. Returns the requests' features, the impressions'
        encoded columns (``request_row`` counted from the log's first request) and the state
        after the chunk. ``state`` is spent, an array at a time, as it is joined to the chunk's
        events (:meth:`HistoryState.then`), and so are the joined events as the state after the
        chunk is selected from them, once the index has gone: the state is never held twice
        whole."""
        request, columns, shown = self._pairs(context.item, context.items, requests, impressions)
        events = context.keys.events(requests, columns["request_row"], impressions["click"])
        events, shown = state.then(events, shown)
        del state
        options = self.history_options
        index = HistoryIndex(context.keys, events, requests)  # only the chunk asks
        h = index.histories(requests, **options)
        request |= self.encode_histories(h, shown)
        kept = index.kept(options["user_length"], options["click_length"],
                          options["crowd_length"], options["crowd_days"])  # fmt: skip
        del index, h
        after = HistoryState.of(events, shown, *kept)
        columns["request_row"] = columns["request_row"] + first_row
        table = pa.table(
            {
                **columns,
                "request_id": impressions["request_id"],
                "item_id": impressions["item_id"],
                "position": impressions["position"].cast(pa.int16()),
                "click": impressions["click"].cast(pa.int8()),
                "relevance": impressions["relevance"].cast(pa.int8()),
            }
        )
        return EncodedChunk(request, table, after)

    def encode_pairs(self, log: SearchLog) -> tuple[dict, dict, dict, dict]:
        """Everything but the histories: item features, history-free request features, the
        impression columns (row indices and match features) and what a history entry shows
        of each impression (:meth:`history_events`)."""
        item = self.encode_items(log.items)
        return item, *self._pairs(item, log.items, log.requests, log.impressions)

    def _pairs(
        self, item: dict, items: pa.Table, req: pa.Table, imp: pa.Table
    ) -> tuple[dict, dict, dict]:  # fmt: skip
        """:meth:`encode_pairs` of requests and their impressions, the items encoded."""
        request = self.encode_requests(req)
        request_row = _row_index(imp["request_id"], req["request_id"], "request_id")
        item_row = _row_index(imp["item_id"], items["item_id"], "item_id")
        columns = {
            "request_row": request_row,
            "item_row": item_row,
            **self.encode_impressions(request, item, request_row, item_row),
        }
        return request, columns, self.history_events(request, item, columns, imp["click"])

    def encode_items(self, items: pa.Table) -> dict[str, np.ndarray]:
        """Item features of an items table (item_id, title, category, brand, price)."""
        v = self.vocabs
        price = np.log1p(items["price"].fill_null(np.nan).to_numpy(zero_copy_only=False))
        missing = np.isnan(price)
        bucket = np.searchsorted(np.asarray(self.stats["price_edges"]), np.nan_to_num(price))
        return {
            "item_id": v["item"].lookup(items["item_id"]),
            "category": v["category"].lookup(items["category"]),
            "brand": v["brand"].lookup(items["brand"]),
            "price_bucket": np.where(missing, PAD, bucket + 2).astype(np.int32),
            "log_price": np.where(
                missing,
                0.0,
                (price - self.stats["log_price_mean"]) / self.stats["log_price_std"],
            ).astype(np.float32),
            "title_tokens": tokens(
                items["title"].to_pylist(), v["token"], self.config.title_tokens
            ),
            **self._text_features(items["title"], "title"),
        }

    def encode_requests(self, requests: pa.Table) -> dict[str, np.ndarray]:
        """Request features that need no history (user, query, its tokens and category)."""
        v = self.vocabs
        out = {
            "user_id": v["user"].lookup(requests["user_id"]),
            "query": v["query"].lookup(requests["query"]),
            "query_tokens": tokens(
                requests["query"].to_pylist(), v["token"], self.config.query_tokens
            ),
        }
        if self.has_query_category:
            out["query_category"] = v["category"].lookup(requests["query_category"])
        return out | self._text_features(requests["query"], "query")

    def _text_features(self, texts: pa.ChunkedArray, side: str) -> dict[str, np.ndarray]:
        """A text encoder's inputs: the student's pieces, or the text's embedding-cache row."""
        out = {}
        if self.pieces is not None:
            length = getattr(self.config, f"{side}_pieces")
            out[f"{side}_pieces"] = self.pieces.encode(texts.to_pylist(), length).astype(np.int32)
        if self.config.text_cache:
            out[f"{side}_text"] = self.vocabs["text"].lookup(texts)[:, None]
        return out

    def encode_impressions(
        self, request: dict, item: dict, request_row: np.ndarray, item_row: np.ndarray
    ) -> dict[str, np.ndarray]:
        """How each (request, item) pair matches: title token overlap, category match and,
        with the relevance context, the match level."""
        columns = {
            "title_match": token_overlap(
                request["query_tokens"], item["title_tokens"], request_row, item_row
            )
        }
        if self.has_query_category:
            columns["category_match"] = (
                (request["query_category"][request_row] == item["category"][item_row])
                & (item["category"][item_row] > OOV)
            ).astype(np.float32)
        if self.config.relevance_context:
            columns["match_level"] = match_level(
                columns["title_match"], columns.get("category_match")
            )
        return columns

    @property
    def history_options(self) -> dict[str, Any]:
        """History lengths and the crowd's window and back-off, as
        :meth:`HistoryIndex.histories` takes them."""
        cfg = self.config
        return {"user_length": 20, "click_length": cfg.user_clicks,
                "crowd_length": cfg.crowd_length, "crowd_days": cfg.crowd_days,
                "crowd_min_events": cfg.crowd_min_events}  # fmt: skip

    def history_events(
        self, request: dict, item: dict, columns: dict, click: pa.ChunkedArray | pa.Array
    ) -> dict[str, np.ndarray]:
        """What a history entry shows of each impression: its item id and category, the query
        it was shown under, its match level and whether it was clicked (ids, 0 = padding)."""
        events = {
            "item_id": item["item_id"][columns["item_row"]],
            "category": item["category"][columns["item_row"]],
        }
        if self.config.relevance_context:
            events |= {
                "query": request["query"][columns["request_row"]],
                "match_level": columns["match_level"],
                "click": click.fill_null(0).to_numpy().astype(np.int8) + 2,
            }
        return events

    def encode_histories(self, h: Histories, events: dict[str, np.ndarray]) -> dict:
        """Request features read off histories (rows of the impressions ``events`` describe)."""
        out = {
            "user_activity": np.log1p((h.user_requests >= 0).sum(1)).astype(np.float32),
            "user_clicks": _gather(events["item_id"], h.user_clicks),
            "user_click_categories": _gather(events["category"], h.user_clicks),
        }
        if self.config.relevance_context:
            out |= {
                "user_click_queries": _gather(events["query"], h.user_clicks),
                "user_click_match": _gather(events["match_level"], h.user_clicks),
                "crowd_items": _gather(events["item_id"], h.crowd),
                "crowd_categories": _gather(events["category"], h.crowd),
                "crowd_match": _gather(events["match_level"], h.crowd),
                "crowd_clicks": _gather(events["click"], h.crowd),
            }
        return out

    @property
    def vocab_sizes(self) -> dict[str, int]:
        sizes = {name: len(vocab) for name, vocab in self.vocabs.items()}
        if self.pieces is not None:
            sizes["piece"] = self.pieces.vocab_size
        return sizes

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.config.model_dump(),
            "stats": self.stats,
            "has_query_category": self.has_query_category,
            "vocabs": {k: vb.saved() for k, vb in self.vocabs.items()},
        }
        with atomic_file(directory / "features.json") as tmp:
            tmp.write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> FeatureEncoder:
        path = directory / "features.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no fitted features (run `prectr train` first)")
        state = json.loads(path.read_text())
        encoder = cls(FeatureConfig.model_validate(state["config"]))
        encoder.stats = state["stats"]
        encoder.has_query_category = state["has_query_category"]
        encoder.vocabs = {
            k: Vocabulary(s["values"], s["counts"]) for k, s in state["vocabs"].items()
        }
        return encoder


def _with_piece_limits(config: FeatureConfig) -> FeatureConfig:
    """``config`` with unset piece limits taken from its student's configuration."""
    if not config.student or None not in (config.query_pieces, config.title_pieces):
        return config
    query, title = piece_limits(config.student)
    return config.updated(query_pieces=config.query_pieces or query,
                          title_pieces=config.title_pieces or title)  # fmt: skip


def _row_index(values: pa.ChunkedArray, keys: pa.ChunkedArray, name: str) -> np.ndarray:
    """The row of ``keys`` each value names; an unknown value is refused by name."""
    found = pc.index_in(values, value_set=keys)
    if found.null_count:
        raise ValueError(f"impressions: {count(found.null_count, 'row')} name an unknown {name}")
    return found.to_numpy(zero_copy_only=False).astype(np.int64)


def _gather(values: np.ndarray, history: np.ndarray) -> np.ndarray:
    """``values`` of each history entry (an index, -1 = none); padding where there is none."""
    return np.where(history >= 0, values[np.maximum(history, 0)], PAD).astype(np.int32)
