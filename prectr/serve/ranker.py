"""The in-process ranker: one search request in, its candidates ranked and explained out.

:class:`Ranker` loads a run directory (config, fitted features, a checkpoint) and scores a
request's candidates in one batch. Item features (ids, price, title tokens) are cached in a
bounded LRU keyed by every field the request sends, so a changed title is a new entry; the
user's and the query's histories come from a :class:`~prectr.serve.store.HistoryStore`. Each
ranked candidate carries its click probability, its relevance-grade distribution (models with
a relevance module) and the personalised incentive (PRECTR), so a caller can see *why* it
ranks where it does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from prectr.cache import SlotCache
from prectr.data.dataset import Batch, request_batch
from prectr.data.features import Sequence
from prectr.data.schema import read_log
from prectr.serve.export import (
    FINGERPRINT,
    ScoringGraph,
    export,
    exported_fingerprint,
    fingerprint,
)
from prectr.serve.store import HistoryStore
from prectr.train.run import load_trained

ITEM_FIELDS = ("item_id", "title", "category", "brand", "price")
ENGINES = ("torch", "onnx")
item_key = attrgetter(*ITEM_FIELDS)  # a candidate's cache key: every field it was sent with


@dataclass
class Candidate:
    item_id: str | int
    title: str
    category: str
    brand: str | None = None
    price: float | None = None


@dataclass
class SearchRequest:
    user_id: str | int
    query: str
    candidates: list[Candidate]
    query_category: str | None = None  # default: the log's for the query (Ranker.resolve)
    timestamp: datetime | None = None  # default: now; histories hold events before it


@dataclass
class Ranked:
    item_id: str | int
    score: float  # P(click), what the ranking sorts by
    grades: list[float] | None = None  # P(grade = 0..3)
    incentive: float | None = None  # the personalised relevance incentive (logit units)


class Ranker:
    def __init__(
        self,
        run_dir: str | Path,
        history: str | Path | None = None,
        checkpoint: str = "best",
        cache_size: int = 100_000,
        threads: int | None = None,
        engine: str = "torch",
    ):
        """``history``: a log directory whose events feed the histories (default: the log the
        run trained on, ``data.log`` of its config). ``engine``: eager ``torch``, or ``onnx``
        (ONNX Runtime on the run's exported graph, exported and checked on first use)."""
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
        if threads:
            torch.set_num_threads(threads)
        self.run, self.checkpoint = load_trained(run_dir, checkpoint), checkpoint
        self.encoder, self.model = self.run.encoder, self.run.model
        crowd_from = self.run.config.model_params.get("crowd_from", "own")
        if crowd_from != "own":
            raise ValueError(f"{run_dir}: crowd_from {crowd_from!r} is a control that reads "
                             "another request's crowd from its batch; a served request is alone "
                             "in its batch, so it cannot be served or exported")  # fmt: skip
        source = history or self.run.config.data.log
        if source is None:
            raise ValueError(f"{run_dir}: no history log: pass one (the run's config names none)")
        self.history = Path(source)
        self.history_stamp = log_stamp(self.history)
        self.store = HistoryStore(self.encoder, read_log(self.history))
        self.user_type = self.store.requests.schema.field("user_id").type
        self.item_type = self.store.items.schema.field("item_id").type
        self.cache = SlotCache(cache_size)
        probe = SearchRequest(
            self.store.requests["user_id"][0].as_py(),
            "probe",
            [Candidate(self.store.items["item_id"][0].as_py(), "probe", "probe")],
        )
        self.specs = self.encoder.specs  # built once, not per request
        # a request's histories travel as one row that the model broadcasts to its candidates
        self.shared = tuple(s.name for s in self.specs
                            if isinstance(s, Sequence) and s.level == "request")  # fmt: skip
        self.graph = ScoringGraph(self.model, self.batch(probe), self.shared)
        self.session = self._onnx_session(checkpoint, threads) if engine == "onnx" else None
        # what the model explains ("score", "grades", "incentive"); scoring also warms up
        self.outputs = set(self.score(probe))

    def refresh_history(self) -> bool:
        """Rebuild the history store if the history log changed on disk (a part added,
        removed or rewritten); True when it did. The old store serves until the new one is
        complete, and a log that fails validation leaves it in place (the error is raised)."""
        stamp = log_stamp(self.history)
        if stamp == self.history_stamp:
            return False
        store = HistoryStore(self.encoder, read_log(self.history))
        self.store, self.history_stamp = store, stamp
        return True

    def set_threads(self, threads: int) -> None:
        """Threads for scoring (torch intra-op threads, and ONNX Runtime's)."""
        torch.set_num_threads(threads)
        if self.session is not None:
            self.session = self._onnx_session(self.checkpoint, threads)

    def _onnx_session(self, checkpoint: str, threads: int | None):
        """ONNX Runtime on the run's exported graph, exported again when the export is missing
        or was built from another checkpoint or another version of the model code."""
        import onnxruntime

        path = self.run.path / "export" / f"{checkpoint}.onnx"
        built_from = fingerprint(self.run.path / "checkpoints" / f"{checkpoint}.pt")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            options.intra_op_num_threads = threads
        if built_from != exported_fingerprint(path):
            self.export(path, "onnx", {FINGERPRINT: built_from})
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def export(self, path: Path, fmt: str, metadata: dict[str, str] | None = None) -> float:
        """Export the scoring graph (:func:`prectr.serve.export.export`), checked against
        eager PyTorch on the history log's last two requests; the largest difference."""
        last = self.store.requests.num_rows - 1
        requests = [self.logged_request(i) for i in (last, max(last - 1, 0))]
        batches = [self.batch(r) for r in requests if r.candidates]
        return export(self.model, batches, path, fmt, shared=self.shared, metadata=metadata)

    def logged_request(self, row: int) -> SearchRequest:
        """Request ``row`` of the history log with its logged candidates (to check exports)."""
        req = self.store.requests.slice(row, 1).to_pylist()[0]
        imp = self.store.impressions
        shown = imp.filter(pc.equal(imp["request_id"], req["request_id"]))["item_id"]
        items = self.store.items.filter(pc.is_in(self.store.items["item_id"], shown)).to_pylist()
        candidates = [Candidate(**{f: i[f] for f in ITEM_FIELDS}) for i in items]
        return SearchRequest(req["user_id"], req["query"], candidates,
                             req.get("query_category"), req["timestamp"])  # fmt: skip

    def rank(self, request: SearchRequest) -> list[Ranked]:
        """The candidates sorted by click probability, best first (ties keep their order)."""
        if not request.candidates:
            return []
        out = self.score(request)
        order = np.argsort(-out["score"], kind="stable")
        ids = [request.candidates[i].item_id for i in order.tolist()]
        columns = [out[k][order].tolist() if k in out else repeat(None)
                   for k in ("score", "grades", "incentive")]  # fmt: skip
        return [Ranked(*row) for row in zip(ids, *columns, strict=False)]

    def score(self, request: SearchRequest) -> dict[str, np.ndarray]:
        """Scores in the candidates' order: ``score``, ``grades`` and ``incentive`` where the
        model has them."""
        return self.predict(self.batch(request))

    @torch.inference_mode()
    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """The scoring graph's outputs on a batch, by the ranker's engine."""
        inputs = self.graph.inputs(batch)
        if self.session is None:
            outputs = [t.numpy() for t in self.graph(*inputs)]
        else:
            feed = {n: t.numpy() for n, t in zip(self.graph.input_names, inputs, strict=True)}
            outputs = self.session.run(self.graph.output_names, feed)
        return dict(zip(self.graph.output_names, outputs, strict=True))

    def resolve(self, request: SearchRequest) -> SearchRequest:
        """The request as it is scored: its timestamp in naive UTC to the millisecond (the
        log's convention), now when it has none; its query category the one sent, else the
        one the history log most often gave the query before then
        (:meth:`HistoryStore.query_category`), else None (unknown); None whatever was sent
        when the model reads no query category (its training log had none)."""
        stamp = request.timestamp or datetime.now(UTC)
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(UTC).replace(tzinfo=None)
        stamp = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)  # the log's unit
        category = None
        if self.encoder.has_query_category:
            category = request.query_category
            if category is None:
                category = self.store.query_category(request.query, stamp)
        return replace(request, timestamp=stamp, query_category=category)

    def batch(self, request: SearchRequest) -> Batch:
        """The request's features (computed once, as one row), its candidates' (from the item
        cache) and their pair features, as the model reads them."""
        enc = self.encoder
        item = self._items(request.candidates)
        request = self.resolve(request)
        row = {
            "user_id": typed([request.user_id], self.user_type, lambda _: ("user_id",)),
            "query": pa.array([request.query], pa.string()),
            "timestamp": pa.array([request.timestamp], pa.timestamp("ms")),
        }
        if enc.has_query_category:
            row["query_category"] = pa.array([request.query_category], pa.string())
        table = pa.table(row)
        features = enc.encode_requests(table) | self.store.features(table)
        n = len(request.candidates)
        pairs = enc.encode_impressions(features, item, np.zeros(n, np.int64), np.arange(n))
        return request_batch(self.specs, features, item, pairs)

    def _items(self, candidates: list[Candidate]) -> dict[str, np.ndarray]:
        keys = list(map(item_key, candidates))
        slots = self.cache.lookup(keys)
        missing = np.flatnonzero(slots < 0)
        if missing.size == 0:
            return self.cache.gather(slots)
        fields = {f: [getattr(candidates[i], f) for i in missing] for f in ITEM_FIELDS}
        table = pa.table(
            {
                "item_id": typed(
                    fields["item_id"],
                    self.item_type,
                    lambda i: ("candidates", int(missing[i]), "item_id"),
                ),
                "title": pa.array(fields["title"], pa.string()),
                "category": pa.array(fields["category"], pa.string()),
                "brand": pa.array(fields["brand"], pa.string()),
                "price": pa.array(fields["price"], pa.float64()),
            }
        )
        encoded = self.encoder.encode_items(table)
        if missing.size == len(candidates):
            out = encoded
        else:
            out = {k: np.empty((len(candidates), *v.shape[1:]), v.dtype)
                   for k, v in encoded.items()}  # fmt: skip
            hit = np.flatnonzero(slots >= 0)
            for k, v in self.cache.gather(slots[hit]).items():
                out[k][hit] = v
            for k, v in encoded.items():
                out[k][missing] = v
        self.cache.store([keys[i] for i in missing], encoded)
        return out


def log_stamp(root: Path) -> tuple:
    """What identifies a log directory's content: each parquet file's path, size and mtime."""
    return tuple(sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in root.rglob("*.parquet")))  # fmt: skip


class IdError(ValueError):
    """An id that cannot be one of the log's ids; ``loc`` names it (``("user_id",)`` or
    ``("candidates", 3, "item_id")``), without the id itself."""

    def __init__(self, loc: tuple, arrow_type: pa.DataType):
        self.loc, self.reason = loc, f"not an id of the log's type {arrow_type}"
        super().__init__(f"{'.'.join(map(str, loc))}: {self.reason}")


def typed(values: list, arrow_type: pa.DataType, loc: Callable[[int], tuple]) -> pa.Array:
    """``values`` as the log's id type; the first that cannot be one is refused by
    ``loc(its position)``. Ids sent as the log's Python type (ints for an integer id, strs
    for a string one) are taken as they are; others compare as text (``"12"`` is 12)."""
    native = int if pa.types.is_integer(arrow_type) else str
    if all(type(v) is native for v in values):  # not bool, though it is an int
        try:
            return pa.array(values, arrow_type)
        except (pa.ArrowInvalid, OverflowError):  # beyond the type's range: refused below
            pass
    strings = pa.array([str(v) for v in values], pa.string())
    try:
        return strings.cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        for i in range(len(strings)):
            try:
                strings.slice(i, 1).cast(arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise IdError(loc(i), arrow_type) from err
        raise
