"""Streaming batches of encoded impressions, whole requests at a time.

Encoded impressions (row indices into the in-memory item and request features, impression-level
numerics, labels), written as shards sorted by request (:mod:`prectr.data.shards`), are read
back in chunks of ``buffer_rows``, keeping the ``rows`` a loss reads (``exposed``,
``exposed_or_labelled``, ``labelled`` or ``all`` candidates); requests are shuffled within a
chunk and never split between batches, so request-level losses see every candidate of a
request.

The order of a shard's rows in an epoch is a pure function of ``(seed, epoch, shard)`` and does
not depend on the batch size or the number of processes, so a stream's position is a count of
rows per shard: an interrupted run resumes there exactly, and a run resumed with another number
of processes reads every remaining row once.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from pathlib import Path, PurePosixPath
from queue import Full, Queue
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from prectr.data.dataset import Batch, Collator
from prectr.data.features import ranges
from prectr.data.shards import on_filesystem

T = TypeVar("T")
ROW_SETS = ("exposed", "exposed_or_labelled", "labelled", "all")
BATCH_COUNTS = ("rows", "exposed")  # what a batch size counts

_COLUMNS_DROPPED = ("request_id", "item_id")


class BatchStream:
    """Batches of whole requests from encoded-impressions parquet shards (paths in
    ``filesystem``, default: the local one).

    A batch ends at the first request end at or after ``batch_size`` rows of the row set
    ``rows``, or with ``counts="exposed"`` at or after ``batch_size`` exposed impressions, so
    that streams of different row sets can take steps of the same impressions.

    ``position`` maps each shard's file name to the rows of the current epoch already handed
    out (after the last batch yielded); pass it back as ``start`` to resume there, with any
    batch size.
    """

    def __init__(
        self,
        paths: str | Path | Seq[str | Path],
        collator: Collator,
        batch_size: int = 2048,
        shuffle: bool = True,
        seed: int = 0,
        rows: str = "exposed",
        buffer_rows: int = 262_144,
        filesystem: pafs.FileSystem | None = None,
        counts: str = "rows",
    ):
        paths = [paths] if isinstance(paths, str | Path) else paths
        self.filesystem = filesystem or pafs.LocalFileSystem()
        self.paths = [PurePosixPath(on_filesystem(p, filesystem)[1]) for p in paths]
        self.collator = collator
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if rows not in ROW_SETS:
            raise ValueError(f"rows {rows!r}: expected one of {', '.join(ROW_SETS)}")
        if counts not in BATCH_COUNTS:
            raise ValueError(f"counts {counts!r}: expected one of {', '.join(BATCH_COUNTS)}")
        self.rows, self.buffer_rows, self.counts = rows, buffer_rows, counts
        names = self._file(self.paths[0]).schema_arrow.names
        self.columns = [c for c in names if c not in _COLUMNS_DROPPED]
        self.position: dict[str, int] = {}

    def _file(self, path: PurePosixPath) -> pq.ParquetFile:
        return pq.ParquetFile(str(path), filesystem=self.filesystem)

    def _chunks(self, path: PurePosixPath) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of about ``buffer_rows`` rows of one shard that never split a request."""
        carry: dict[str, np.ndarray] | None = None
        for record in self._file(path).iter_batches(self.buffer_rows, columns=self.columns):
            chunk = {name: _numpy(record.column(name)) for name in self.columns}
            exposed, labelled = ~np.isnan(chunk["click"]), ~np.isnan(chunk["relevance"])
            keep = {"exposed": exposed, "labelled": labelled, "all": np.ones_like(exposed),
                    "exposed_or_labelled": exposed | labelled}[self.rows]  # fmt: skip
            chunk = {k: v[keep] for k, v in chunk.items()}  # (also a writable copy)
            if carry is not None:
                chunk = {k: np.concatenate([carry[k], v]) for k, v in chunk.items()}
            req = chunk["request_row"]
            if req.size == 0:
                carry = None
                continue
            cut = int(np.searchsorted(req, req[-1], side="left"))
            carry = {k: v[cut:] for k, v in chunk.items()}
            if cut:
                yield {k: v[:cut] for k, v in chunk.items()}
        if carry is not None and carry["request_row"].size:
            yield carry

    def epoch(
        self, epoch: int = 0, start: dict[str, int] | None = None, prefetch: int = 0
    ) -> Iterator[Batch]:
        """The batches of one epoch, each shard's rows in an order fixed by (seed, epoch,
        shard). ``start`` skips, per shard, rows already read (a stream's ``position``)
        without assembling them. Rows left at the end of a shuffle buffer join the next one,
        and those at the end of a shard its last batch. ``prefetch > 0`` reads and assembles up to
        that many batches ahead in a background thread; the batches and positions are the
        same."""
        start = start or {}
        self.position = {p.name: start.get(p.name, 0) for p in self.paths}
        batches = self._batches(epoch, dict(self.position))
        if prefetch > 0:
            batches = _ahead(batches, prefetch)
        for batch, position in batches:
            self.position = position
            yield batch

    def _batches(self, epoch: int, position: dict[str, int]) -> Iterator[tuple[Batch, dict]]:
        """Each batch with the stream's position after it. The shards are read side by side:
        the next batch comes from the shard read least so far (ties in an order fixed by seed
        and epoch), so an epoch is one pass through the log's time order whatever the number
        of shards and processes, and the choice depends on the position alone (a resumed
        stream makes the same one)."""
        order = range(len(self.paths))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))
        shards = {i: self._shard(self.paths[i], epoch, position[self.paths[i].name])
                  for i in order}  # fmt: skip
        tie = {i: t for t, i in enumerate(order)}
        queue = [(position[self.paths[i].name], tie[i], i) for i in order]
        heapq.heapify(queue)
        while queue:
            _, _, i = heapq.heappop(queue)
            item = next(shards[i], None)
            if item is None:
                continue
            batch, rows = item
            name = self.paths[i].name
            position[name] += rows
            heapq.heappush(queue, (position[name], tie[i], i))
            yield batch, dict(position)

    def _shard(self, path: PurePosixPath, epoch: int, skip: int) -> Iterator[tuple[Batch, int]]:
        """A shard's batches after its first ``skip`` rows, each with its number of rows. The
        rows left after the last full batch join it, so no batch is short (a run of short
        batches at the end of an epoch, one per shard, would be its last and noisiest steps)."""
        shard = int(path.stem.rsplit("-", 1)[-1]) if path.stem.startswith("part-") else 0
        pending: dict[str, np.ndarray] | None = None
        held: dict[str, np.ndarray] | None = None  # the last full batch, until the next is cut
        for index, chunk in enumerate(self._chunks(path)):
            chunk = self._shuffled(chunk, (self.seed, epoch, shard, index))
            if pending is not None:
                chunk = {k: np.concatenate([pending[k], v]) for k, v in chunk.items()}
            if skip >= chunk["request_row"].size:  # read before: pass over the whole chunk
                skip -= chunk["request_row"].size
                pending = None
                continue
            start, skip = skip, 0
            req = chunk["request_row"]
            ends = np.r_[np.flatnonzero(req[1:] != req[:-1]) + 1, req.size]
            counted = np.arange(req.size + 1)  # rows (or exposed rows) before each row
            if self.counts == "exposed":
                counted = np.r_[0, np.cumsum(~np.isnan(chunk["click"]))]
            reach = counted[ends]
            while (i := int(np.searchsorted(reach, counted[start] + self.batch_size))) < ends.size:
                cut = int(ends[i])  # the first request end at or after batch_size counted rows
                if held is not None:
                    yield self.collator(held), held["request_row"].size
                held = {k: v[start:cut] for k, v in chunk.items()}
                start = cut
            pending = {k: v[start:] for k, v in chunk.items()}
        if pending is not None and pending["request_row"].size:
            held = pending if held is None else {k: np.concatenate([held[k], pending[k]])
                                                 for k in held}  # fmt: skip
        if held is not None:
            yield self.collator(held), held["request_row"].size

    def _shuffled(self, chunk: dict[str, np.ndarray], key: tuple[int, ...]) -> dict:
        """The chunk with its requests in a random order (rows of a request stay together)."""
        if not self.shuffle:
            return chunk
        req = chunk["request_row"]
        starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
        sizes = np.diff(np.r_[starts, req.size])
        order = np.random.default_rng(list(key)).permutation(starts.size)
        rows = np.repeat(starts[order], sizes[order]) + ranges(sizes[order])
        return {k: v[rows] for k, v in chunk.items()}


def _ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items`` produced by a background thread, at most ``depth`` ahead of the consumer; an
    error there is raised here, and a consumer that stops early stops the thread and waits for
    it to end."""
    queue: Queue = Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as err:  # handed to the consumer, which raises it
            put((False, err))

    producer = threading.Thread(target=produce, daemon=True, name="prectr-prefetch")
    producer.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        # joined, not left reading in the background: a daemon thread still inside pyarrow or
        # torch when the interpreter exits can abort the process
        stop.set()
        producer.join()


def _numpy(column: pa.Array) -> np.ndarray:
    if pa.types.is_integer(column.type) and column.null_count:
        return column.cast(pa.float64()).fill_null(np.nan).to_numpy()
    return column.to_numpy(zero_copy_only=False)
