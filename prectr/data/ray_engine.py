"""`prectr prepare --engine ray`: a log's chunks encoded in parallel on a Ray cluster, with the
same output, row for row, as the local engine (:func:`prectr.train.data.encode_in_turn`).

What makes encoding sequential is the histories: a request's user history and its crowd read
events from every earlier chunk. Two designs keep them exact:

(a) partition the events by user (for the user histories) and by normalised query and query
    category (for the crowds), and compute each group's histories in time order inside the
    group (a groupby and map_groups per key), then join the histories back to the requests;
(b) compute, for every chunk in parallel, the chunk's own *partial* history state (what its
    events leave to later requests: each user's last requests and clicks, each query's and
    category's last exposed impressions), fold the partial states in time order on the driver
    into the state before each chunk, and encode the chunks in parallel from those states.

This engine is (b). The state before a chunk is a per-key suffix of the events before it, and
the suffix of two runs of events is the suffix of their suffixes, so folding the partial
states gives exactly the state the local engine carries from chunk to chunk
(:meth:`HistoryIndex.remaining`), and every chunk is encoded by the very function the local
engine calls (:meth:`FeatureEncoder.encode_chunk`): the same output by construction, where (a)
would re-implement the histories, the crowd's back-off and the features over three shuffles of
the log and a join. What (b) holds in memory is bounded by the keys, not the log: the driver
holds the items table, the requests' ids and times and one history state (as the local engine
does), never the impressions, and a worker one chunk and its states. The price is that every
chunk is read and its pairs matched twice (once for its partial state, once to encode it); the
fold itself is a pass over the state per chunk.

Who does what. The driver reads the log with :class:`LogChunks` (validated, the requests in time
order, they and the impressions filed by chunk in a scratch folder, in one streaming pass), fits
the vocabularies on the training days' requests and items (:func:`prectr.train.data.fit_features`),
folds the states, and writes the encoded chunks to the shards and ``features.npz`` as they come
back in order (:class:`prectr.data.shards.ShardWriter`). One Ray actor per CPU of the cluster
holds the encoder, the items and the history keys once, and runs both parallel stages: partial
states, and encoding. The driver schedules them (a window of chunks ahead of the one it
writes), so that a state is folded as soon as the partials before it are in and no more than
the window's states and encoded chunks wait in Ray's object store. The stages are Ray actor
calls rather than a Ray Data map: the fold between them is a scan in time order, which a Data
pipeline cannot express without holding every chunk's state at once.

Workers read the chunks from the driver's scratch folder (under ``TMPDIR``): on a cluster of
several machines, point ``TMPDIR`` at a folder every node mounts, and write the shards to a
location every node reads (``data.shards_uri``). Ray is an optional extra (``pip install
'prectr[ray]'``), imported only when this engine starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import prectr
from prectr.data.chunks import LogChunks
from prectr.data.features import ChunkContext, FeatureEncoder
from prectr.data.history import HistoryIndex, HistoryState

INSTALL = "pip install 'prectr[ray]' (ray[data]==2.60.0)"


def _ray() -> Any:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        message = f"prepare --engine ray needs Ray, which is not installed: {INSTALL}"
        raise ImportError(message) from None
    return ray


class RayEngine:
    """Encodes a log's chunks on Ray (see the module's docstring), as a
    :data:`prectr.train.data.ChunkEngine`: on a local Ray started for it with ``cpus`` CPUs
    (default: the machine's), or on the running cluster at ``address`` (``ray start``'s
    ``HOST:PORT``, or ``auto``). Ray starts on entering a ``with`` block and stops on leaving
    it; one engine can prepare several runs. ``window``: chunks encoded ahead of the one being
    written, per worker."""

    def __init__(self, address: str | None = None, cpus: int | None = None, window: int = 2):
        if address is not None and cpus is not None:
            raise ValueError("--cpus sizes a local Ray; a cluster at --address has its own")
        if cpus is not None and cpus < 1:
            raise ValueError(f"--cpus {cpus}: expected at least 1")
        if window < 1:
            raise ValueError(f"window {window}: expected at least 1")
        self.address, self.cpus, self.window = address, cpus, window
        self.ray = _ray()
        self.workers = 0

    def __enter__(self) -> RayEngine:
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
        if self.address is None:  # workers import this checkout's prectr
            package_root = str(Path(prectr.__file__).resolve().parents[1])
            options |= {"num_cpus": self.cpus,
                        "runtime_env": {"env_vars": {"PYTHONPATH": package_root}}}  # fmt: skip
        self.ray.init(address=self.address, **options)
        self.workers = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.ray.shutdown()

    def __call__(
        self, encoder: FeatureEncoder, context: ChunkContext, log: LogChunks
    ) -> Iterator[tuple[dict[str, np.ndarray], pa.Table]]:  # fmt: skip
        """Each chunk's request features and encoded impressions, in the chunks' order."""
        if not self.workers:
            raise RuntimeError("RayEngine: start it in a `with` block before encoding")
        worker = self.ray.remote(num_cpus=1)(_Worker)
        shared = self.ray.put((encoder, context, log))
        actors = [worker.remote(shared) for _ in range(min(self.workers, log.chunks))]
        try:
            yield from _Schedule(self.ray, actors, encoder, context, log.chunks,
                                 self.window * len(actors)).run()  # fmt: skip
        finally:
            for actor in actors:
                self.ray.kill(actor)


class _Worker:
    """A Ray actor: the encoder, the items' features, the history keys and the log's chunks,
    loaded once; it computes a chunk's partial state or encodes a chunk from a state."""

    def __init__(self, shared: tuple[FeatureEncoder, ChunkContext, LogChunks]):
        self.encoder, self.context, self.log = shared

    def partial(self, k: int) -> HistoryState:
        """What chunk ``k``'s own events leave to later requests (its state after no events)."""
        requests, impressions = self.log.chunk(k)
        start = HistoryState.start(self.context.keys)
        return self.encoder.encode_chunk(self.context, start, requests, impressions).state

    def encode(self, k: int, state: HistoryState) -> tuple[dict[str, np.ndarray], pa.Table]:
        """Chunk ``k`` encoded from ``state``, the history state before it."""
        requests, impressions = self.log.chunk(k)
        chunk = self.encoder.encode_chunk(self.context, state, requests, impressions,
                                          int(self.log.bounds[k]))  # fmt: skip
        return chunk.request, chunk.impressions


class _Schedule:
    """The driver's side: partial states computed ahead, folded in order, chunks encoded as
    soon as their state is known, and yielded in order; at most ``window`` chunks past the
    one last yielded are in flight or waiting. Encoding goes before partial states when a
    worker is free (it is what the writer waits for)."""

    def __init__(self, ray: Any, actors: list, encoder: FeatureEncoder, context: ChunkContext,
                 chunks: int, window: int):  # fmt: skip
        self.ray, self.idle, self.keys, self.chunks = ray, deque(actors), context.keys, chunks
        self.options = encoder.history_options
        self.window = window
        self.state = HistoryState.start(context.keys)
        self.ready: deque[tuple[int, Any]] = deque([(0, self.ray.put(self.state))])
        self.next_partial, self.folded = 0, 0  # partials asked for / folded into the state
        self.partials: dict[int, Any] = {}  # chunk -> its partial state, not yet folded
        self.encoded: dict[int, Any] = {}  # chunk -> its encoding (None while it runs)
        self.running: dict[Any, tuple[str, int, Any]] = {}

    def run(self) -> Iterator[tuple[dict[str, np.ndarray], pa.Table]]:
        for k in range(self.chunks):
            while self.encoded.get(k) is None:  # not asked for, or still running
                self._submit(k)
                self._collect()
            yield self.ray.get(self.encoded.pop(k))

    def _submit(self, written: int) -> None:
        """Give every idle worker the next encoding whose state is known, else the next
        partial state, within the window past chunk ``written``."""
        while self.idle:
            if self.ready and self.ready[0][0] < written + self.window:
                k, state = self.ready.popleft()
                actor = self.idle.popleft()
                self.running[actor.encode.remote(k, state)] = ("encode", k, actor)
                self.encoded[k] = None
            elif self.next_partial < min(self.chunks - 1, written + self.window):
                k, actor = self.next_partial, self.idle.popleft()
                self.running[actor.partial.remote(k)] = ("partial", k, actor)
                self.next_partial += 1
            else:
                return

    def _collect(self) -> None:
        """Wait for one call to finish; file its result and fold what partials it allows."""
        [done], _ = self.ray.wait(list(self.running), num_returns=1)
        kind, k, actor = self.running.pop(done)
        self.idle.append(actor)
        (self.encoded if kind == "encode" else self.partials)[k] = done
        while self.folded in self.partials:
            partial: HistoryState = self.ray.get(self.partials.pop(self.folded))
            events, shown = self.state.then(partial.events, partial.shown)
            self.state = HistoryIndex(self.keys, events).remaining(
                shown, self.options["user_length"], self.options["click_length"],
                self.options["crowd_length"], self.options["crowd_days"],
            )  # fmt: skip
            self.folded += 1
            self.ready.append((self.folded, self.ray.put(self.state)))
