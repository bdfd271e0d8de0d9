"""Streaming batches of encoded impressions, whole requests at a time.

Encoded impressions (row indices into the in-memory item and request features, impression-level
numerics, labels) are written to parquet sorted by request and read back in chunks of
``buffer_rows``, keeping the ``rows`` a loss reads (``exposed``, ``exposed_or_labelled``,
``labelled`` or ``all`` candidates); requests are shuffled within a chunk and never split
between batches, so request-level losses see every candidate of a request.

A split is written as shards (``part-00000.parquet``, ...), each request in exactly one, chosen
by its row index; under ``torchrun`` each process reads only its own shards
(:func:`shards_of`). The order of a shard's rows in an epoch is a pure function of
``(seed, epoch, shard)`` and does not depend on the batch size or the number of processes, so
a stream's position is a count of rows per shard: an interrupted run resumes there exactly, and
a run resumed with another number of processes reads every remaining row once.

Shards are read and written through a pyarrow filesystem: a local folder or any filesystem URI
pyarrow opens (``file://``, ``s3://``, ``gs://``, ``hdfs://``, ...) is resolved once to a
filesystem and a path in it (:func:`resolve_location`), and every read goes through them.
"""

from __future__ import annotations

import heapq
import posixpath
import threading
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from queue import Full, Queue
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from prectr.data.features import Categorical, EncodedLog, Numeric, Sequence, ranges
from prectr.io import atomic_fs_file
from prectr.words import count

T = TypeVar("T")
ROW_GROUP = 65_536
ROW_SETS = ("exposed", "exposed_or_labelled", "labelled", "all")
# the rows a loss averages over: every row of a batch, exposed, graded, clicked (and exposed)
LOSS_ROWS = ("all", "exposed", "labelled", "clicked", "paired")


def time_split(
    requests: pa.Table, valid_days: int = 1, test_days: int = 1
) -> dict[str, np.ndarray]:
    """Row indices of the requests of each split by calendar day (UTC): the last ``test_days``
    days are the test split, the ``valid_days`` before them validation, the rest training."""
    day = pc.cast(pc.cast(requests["timestamp"], pa.timestamp("ms")), pa.date32())
    day = day.cast(pa.int32()).to_numpy(zero_copy_only=False)
    days = np.unique(day)
    if days.size < valid_days + test_days + 1:
        raise ValueError(
            f"the log spans {count(days.size, 'day')}; a time split needs more than "
            f"{valid_days + test_days}"
        )
    test_from, valid_from = days[-test_days], days[-test_days - valid_days]
    return {
        "train": np.flatnonzero(day < valid_from),
        "valid": np.flatnonzero((day >= valid_from) & (day < test_from)),
        "test": np.flatnonzero(day >= test_from),
    }


@dataclass
class Batch:
    """A batch of impressions: ids, numerics and sequences in the order of the feature specs."""

    categorical: torch.Tensor  # (B, n_categorical) int64
    numeric: torch.Tensor  # (B, n_numeric) float32
    sequences: dict[str, torch.Tensor]  # name -> (B, length) int64, 0 = padding
    click: torch.Tensor  # (B,) float32, 0 for unexposed rows
    exposed: torch.Tensor  # (B,) bool
    relevance: torch.Tensor  # (B,) int64, -1 = unknown
    request: torch.Tensor  # (B,) int64 request row, equal within a request
    item: torch.Tensor  # (B,) int64 item row
    position: torch.Tensor  # (B,) int64 shown rank, 0 = not exposed (for position-bias terms)
    # in a distributed step: rows of each kind per process over the step (see ``rows_of``)
    step_rows: dict[str, float] | None = None

    def __len__(self) -> int:
        return self.click.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.categorical.to(device), self.numeric.to(device),
            {k: v.to(device) for k, v in self.sequences.items()}, self.click.to(device),
            self.exposed.to(device), self.relevance.to(device), self.request.to(device),
            self.item.to(device), self.position.to(device), self.step_rows,
        )  # fmt: skip

    def local_rows(self) -> dict[str, float]:
        """This batch's rows of each kind a loss averages over (see ``LOSS_ROWS``); ``paired``:
        the clicks whose request has an unexposed candidate in the batch (PRECTR-V2 pairs each
        with unexposed partners)."""
        clicked = self.exposed & (self.click > 0)
        _, request = self.requests()
        unexposed = torch.zeros(len(self), device=self.click.device)
        unexposed = unexposed.index_add(0, request, (~self.exposed).float())
        return {
            "all": float(len(self)),
            "exposed": float(self.exposed.sum()),
            "labelled": float((self.relevance >= 0).sum()),
            "clicked": float(clicked.sum()),
            "paired": float((clicked & (unexposed[request] > 0)).sum()),
        }

    def requests(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first row of each request of the batch, ``(R,)``, and each row's request among
        them, ``(B,)``. A batch holds whole requests, each in consecutive rows, so a
        request-level feature read at the first rows and indexed by the second is the feature
        itself, with what is computed from it computed once per request."""
        new = torch.ones(len(self), dtype=torch.bool, device=self.request.device)
        new[1:] = self.request[1:] != self.request[:-1]
        return torch.nonzero(new).squeeze(1), torch.cumsum(new.long(), 0) - 1

    def rows_of(self, kind: str) -> float:
        """The number of rows of ``kind`` a loss over this batch divides its sum by.

        One process: the batch's own count, so the loss is a plain mean. In a distributed
        step the trainer sets ``step_rows``, the count over all processes' batches divided by
        the number of processes: DDP averages the processes' gradients, so each process
        dividing its sum by that figure makes the step's gradient the gradient of the mean
        over every row of the step, however unevenly the rows fall between processes.
        """
        return (self.step_rows or self.local_rows())[kind]


class Collator:
    """Turns impression columns into a :class:`Batch` by gathering item and request features."""

    def __init__(self, encoded: EncodedLog):
        self.specs = encoded.specs
        levels = {"item": encoded.item, "request": encoded.request}
        self.tables = {
            spec.name: torch.from_numpy(np.ascontiguousarray(levels[spec.level][spec.name]))
            for spec in self.specs
            if spec.level in levels
        }

    def __call__(self, columns: dict[str, np.ndarray]) -> Batch:
        rows = {
            "item": torch.from_numpy(columns["item_row"]),
            "request": torch.from_numpy(columns["request_row"]),
        }

        def value(spec) -> torch.Tensor:
            if spec.level == "impression":
                return torch.from_numpy(columns[spec.name])
            return self.tables[spec.name][rows[spec.level]]

        cats = [value(s).long() for s in self.specs if isinstance(s, Categorical)]
        nums = [value(s).float() for s in self.specs if isinstance(s, Numeric)]
        click = columns["click"]
        relevance = columns["relevance"]
        return Batch(
            categorical=torch.stack(cats, 1),
            numeric=torch.stack(nums, 1),
            sequences={s.name: value(s).long() for s in self.specs if isinstance(s, Sequence)},
            click=torch.from_numpy(np.nan_to_num(click, nan=0.0).astype(np.float32)),
            exposed=torch.from_numpy(~np.isnan(click)),
            relevance=torch.from_numpy(np.nan_to_num(relevance, nan=-1).astype(np.int64)),
            request=rows["request"].long(),
            item=rows["item"].long(),
            position=torch.from_numpy(np.nan_to_num(columns["position"], nan=0).astype(np.int64)),
        )


def request_batch(
    specs: list, request: dict[str, np.ndarray], items: dict[str, np.ndarray],
    impressions: dict[str, np.ndarray],
) -> Batch:  # fmt: skip
    """The unlabelled batch of one request's candidates (serving): ``request`` holds its
    features as one row, ``items`` the candidates' item features in their order and
    ``impressions`` their pair features. Request-level ids and numerics are broadcast to every
    row; request-level sequences stay one row, which the model broadcasts."""
    n = len(items["item_id"])
    levels = {"request": {k: v[:1] for k, v in request.items()}, "item": items,
              "impression": impressions}  # fmt: skip

    def columns(kind: type, dtype: type) -> np.ndarray:
        chosen = [s for s in specs if isinstance(s, kind)]
        out = np.empty((n, len(chosen)), dtype)
        for j, spec in enumerate(chosen):
            out[:, j] = levels[spec.level][spec.name]
        return out

    sequences = {s.name: torch.from_numpy(levels[s.level][s.name].astype(np.int64))
                 for s in specs if isinstance(s, Sequence)}  # fmt: skip
    unlabelled = torch.zeros(n, dtype=torch.int64)
    return Batch(
        categorical=torch.from_numpy(columns(Categorical, np.int64)),
        numeric=torch.from_numpy(columns(Numeric, np.float32)),
        sequences=sequences,
        click=torch.zeros(n),
        exposed=torch.zeros(n, dtype=torch.bool),
        relevance=torch.full((n,), -1, dtype=torch.int64),
        request=unlabelled,
        item=torch.arange(n),
        position=unlabelled,
    )


def resolve_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it of ``location``: a local folder (a relative one from
    the working directory) or a URI that ``pyarrow.fs.FileSystem.from_uri`` opens. A URI that
    cannot be opened (unknown scheme, missing filesystem support, no access) is refused by
    name."""
    text = str(location)
    if "://" not in text:
        return _local(text, None)
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{text}: cannot open this location ({err})") from None


def _local(
    path: str | Path, filesystem: pafs.FileSystem | None
) -> tuple[pafs.FileSystem, str]:  # fmt: skip
    """``path`` in ``filesystem``, or a local path (made absolute) when it is ``None``."""
    if filesystem is None:
        return pafs.LocalFileSystem(), Path(path).absolute().as_posix()
    return filesystem, str(path)


def write_impressions(
    table: pa.Table, path: str | Path, filesystem: pafs.FileSystem | None = None
) -> str | Path:  # fmt: skip
    """Write encoded impressions sorted by request (atomically) to ``path``, in
    ``filesystem`` (default: the local one); return ``path``."""
    table = table.sort_by([("request_row", "ascending")])
    filesystem, target = _local(path, filesystem)
    with atomic_fs_file(filesystem, target) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP, filesystem=filesystem)
    return path


def write_shards(
    table: pa.Table, directory: str | Path, shards: int,
    filesystem: pafs.FileSystem | None = None,
) -> list[str]:  # fmt: skip
    """Write encoded impressions as ``shards`` files in ``directory`` (in ``filesystem``,
    default: the local one); a request's rows all go to shard ``request_row % shards`` (rows
    of one request never straddle two processes). A directory that holds shard files already
    is refused: they would mix with the new ones."""
    if shards < 1:
        raise ValueError(f"data.shards {shards}: expected at least 1")
    filesystem, directory = _local(directory, filesystem)
    if _part_files(filesystem, directory):
        raise FileExistsError(f"{directory} holds shard files (part-*.parquet) already: delete "
                              "them or write the shards elsewhere")  # fmt: skip
    shard = table["request_row"].to_numpy() % shards
    paths = [posixpath.join(directory, f"part-{i:05d}.parquet") for i in range(shards)]
    for i, path in enumerate(paths):
        write_impressions(table.filter(pa.array(shard == i)), path, filesystem)
    return paths


def _part_files(filesystem: pafs.FileSystem, directory: str) -> list[str]:
    selector = pafs.FileSelector(directory, allow_not_found=True)
    try:
        infos = filesystem.get_file_info(selector)
    except OSError as err:
        raise OSError(f"{directory}: cannot list the shard files ({err})") from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File
                  and i.base_name.startswith("part-") and i.extension == "parquet")  # fmt: skip


def shard_paths(directory: str | Path, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """The shard files of a split directory (in ``filesystem``, default: the local one), in
    shard order; a missing one (a gap in the numbers) is refused by name."""
    paths = _part_files(*_local(directory, filesystem))
    if not paths:
        raise FileNotFoundError(f"{directory}: no shard files (part-*.parquet)")
    names = {posixpath.basename(p) for p in paths}
    missing = [f"part-{i:05d}.parquet" for i in range(len(paths)) if f"part-{i:05d}.parquet"
               not in names]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"{directory}: shard {missing[0]} is missing")
    return paths


def shards_of(paths: Seq[T], rank: int, world_size: int) -> list[T]:
    """The shards process ``rank`` of ``world_size`` reads: every ``world_size``-th one."""
    if world_size > len(paths):
        raise ValueError(
            f"{count(world_size, 'process', 'processes')} but {count(len(paths), 'shard')}: "
            "some process would have no data; "
            "set data.shards to at least the number of processes (and rerun from a fresh run)"
        )
    return list(paths[rank::world_size])


_COLUMNS_DROPPED = ("request_id", "item_id")


class BatchStream:
    """Batches of whole requests from encoded-impressions parquet shards (paths in
    ``filesystem``, default: the local one).

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
    ):
        paths = [paths] if isinstance(paths, str | Path) else paths
        self.filesystem = filesystem or pafs.LocalFileSystem()
        self.paths = [PurePosixPath(_local(p, filesystem)[1]) for p in paths]
        self.collator = collator
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if rows not in ROW_SETS:
            raise ValueError(f"rows {rows!r}: expected one of {', '.join(ROW_SETS)}")
        self.rows, self.buffer_rows = rows, buffer_rows
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
            while (i := int(np.searchsorted(ends, start + self.batch_size))) < ends.size:
                cut = int(ends[i])  # the first request end at or after batch_size rows
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
