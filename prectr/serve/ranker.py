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

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from prectr.data.dataset import Batch, Collator
from prectr.data.features import EncodedLog, Sequence
from prectr.data.schema import read_log
from prectr.serve.export import ScoringGraph, export
from prectr.serve.store import HistoryStore
from prectr.train.run import load_trained

ITEM_FIELDS = ("item_id", "title", "category", "brand", "price")
ENGINES = ("torch", "onnx")


@dataclass
class Candidate:
    item_id: str | int
    title: str
    category: str
    brand: str | None = None
    price: float | None = None

    def key(self) -> tuple:
        return tuple(getattr(self, f) for f in ITEM_FIELDS)


@dataclass
class SearchRequest:
    user_id: str | int
    query: str
    candidates: list[Candidate]
    query_category: str | None = None
    timestamp: datetime | None = None  # default: now; histories hold events before it


@dataclass
class Ranked:
    item_id: str | int
    score: float  # P(click), what the ranking sorts by
    grades: list[float] | None = None  # P(grade = 0..3)
    incentive: float | None = None  # the personalised relevance incentive (logit units)


class ItemCache:
    """A bounded LRU of encoded item features: one slot per item key in preallocated arrays,
    so a request's cached items are gathered in one indexing step per feature."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("the item cache needs a capacity of at least 1")
        self.capacity, self.slots = capacity, OrderedDict()
        self.arrays: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.slots)

    def lookup(self, keys: list[tuple]) -> np.ndarray:
        """Each key's slot, -1 when it is not cached (hits become the most recent)."""
        slots = np.full(len(keys), -1, dtype=np.int64)
        for i, key in enumerate(keys):
            slot = self.slots.get(key)
            if slot is not None:
                self.slots.move_to_end(key)
                slots[i] = slot
        found = int((slots >= 0).sum())
        self.hits, self.misses = self.hits + found, self.misses + len(keys) - found
        return slots

    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[slots] for k, v in self.arrays.items()}

    def store(self, keys: list[tuple], features: dict[str, np.ndarray]) -> None:
        """Cache the features of ``keys`` (row ``j`` of each array), evicting the least
        recently used items beyond the capacity."""
        if not self.arrays:
            self.arrays = {k: np.empty((self.capacity, *v.shape[1:]), v.dtype)
                           for k, v in features.items()}  # fmt: skip
        for j, key in enumerate(keys[-self.capacity :]):
            j += max(len(keys) - self.capacity, 0)
            if key in self.slots:
                slot = self.slots[key]
                self.slots.move_to_end(key)
            elif len(self.slots) < self.capacity:
                slot = len(self.slots)
            else:
                slot = self.slots.popitem(last=False)[1]
            self.slots[key] = slot
            for k, v in features.items():
                self.arrays[k][slot] = v[j]


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
        source = history or self.run.config.data.log
        if source is None:
            raise ValueError(f"{run_dir}: no history log: pass one (the run's config names none)")
        self.history = Path(source)
        self.history_stamp = log_stamp(self.history)
        self.store = HistoryStore(self.encoder, read_log(self.history))
        self.user_type = self.store.requests.schema.field("user_id").type
        self.item_type = self.store.items.schema.field("item_id").type
        self.cache = ItemCache(cache_size)
        probe = SearchRequest(
            self.store.requests["user_id"][0].as_py(),
            "probe",
            [Candidate(self.store.items["item_id"][0].as_py(), "probe", "probe")],
        )
        # a request's histories travel as one row that the model broadcasts to its candidates
        self.shared = tuple(s.name for s in self.encoder.specs
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
        import onnxruntime

        path = self.run.path / "export" / f"{checkpoint}.onnx"
        source = self.run.path / "checkpoints" / f"{checkpoint}.pt"
        if not path.is_file() or path.stat().st_mtime < source.stat().st_mtime:
            self.export(path, "onnx")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def export(self, path: Path, fmt: str) -> float:
        """Export the scoring graph (:func:`prectr.serve.export.export`), checked against
        eager PyTorch on the history log's last two requests; the largest difference."""
        last = self.store.requests.num_rows - 1
        requests = [self.logged_request(i) for i in (last, max(last - 1, 0))]
        batches = [self.batch(r) for r in requests if r.candidates]
        return export(self.model, batches, path, fmt, shared=self.shared)

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
        grades, incentive = out.get("grades"), out.get("incentive")
        return [
            Ranked(
                item_id=request.candidates[i].item_id,
                score=float(out["score"][i]),
                grades=None if grades is None else grades[i].tolist(),
                incentive=None if incentive is None else float(incentive[i]),
            )
            for i in order
        ]

    @torch.no_grad()
    def score(self, request: SearchRequest) -> dict[str, np.ndarray]:
        """Scores in the candidates' order: ``score``, ``grades`` and ``incentive`` where the
        model has them."""
        batch = self.batch(request)
        if self.session is None:
            outputs = [t.numpy() for t in self.graph(*self.graph.inputs(batch))]
        else:
            inputs = self.graph.inputs(batch)
            feed = {n: t.numpy() for n, t in zip(self.graph.input_names, inputs, strict=True)}
            outputs = self.session.run(self.graph.output_names, feed)
        return dict(zip(self.graph.output_names, outputs, strict=True))

    def batch(self, request: SearchRequest) -> Batch:
        enc = self.encoder
        item = self._items(request.candidates)
        stamp = request.timestamp or datetime.now(UTC)
        if stamp.tzinfo is not None:  # the log's timestamps are naive UTC
            stamp = stamp.astimezone(UTC).replace(tzinfo=None)
        row = {
            "user_id": typed([request.user_id], self.user_type, "user_id"),
            "query": pa.array([request.query], pa.string()),
            "timestamp": pa.array([stamp], pa.timestamp("ms")),
        }
        if enc.has_query_category:
            row["query_category"] = pa.array([request.query_category], pa.string())
        table = pa.table(row)
        features = enc.encode_requests(table) | self.store.features(table)
        n = len(request.candidates)
        request_row, item_row = np.zeros(n, np.int64), np.arange(n)
        columns = {"request_row": request_row, "item_row": item_row,
                   **enc.encode_impressions(features, item, request_row, item_row),
                   "click": np.full(n, np.nan), "relevance": np.full(n, np.nan),
                   "position": np.full(n, np.nan)}  # fmt: skip
        encoded = EncodedLog(enc.specs, enc.vocab_sizes, item, features, None)
        return Collator(encoded)(columns, one_request=True)

    def _items(self, candidates: list[Candidate]) -> dict[str, np.ndarray]:
        keys = [c.key() for c in candidates]
        slots = self.cache.lookup(keys)
        missing = np.flatnonzero(slots < 0)
        if missing.size == 0:
            return self.cache.gather(slots)
        fields = {f: [getattr(candidates[i], f) for i in missing] for f in ITEM_FIELDS}
        table = pa.table(
            {
                "item_id": typed(fields["item_id"], self.item_type, "item_id"),
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


def typed(values: list, arrow_type: pa.DataType, name: str) -> pa.Array:
    """``values`` as the log's id type; an id that cannot be one is refused by name."""
    try:
        return pa.array([str(v) for v in values], pa.string()).cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{name}: {values!r} are not ids of the log's type {arrow_type}") from err
