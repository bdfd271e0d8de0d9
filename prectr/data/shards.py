"""Where a split's shards are, and how they are written: the time split, shard locations on
any pyarrow filesystem, and encoded impressions written as shards.

A split is written as shards (``part-00000.parquet``, ...), each request in exactly one, chosen
by its row index, its rows sorted by request; under ``torchrun`` each process reads only its
own shards (:func:`shards_of`). Shards are read and written through a pyarrow filesystem: a
local folder or any filesystem URI pyarrow opens (``file://``, ``s3://``, ``gs://``,
``hdfs://``, ...) is resolved once to a filesystem and a path in it (:func:`resolve_location`),
and every read goes through them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence as Seq
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from prectr.io import atomic_fs_file
from prectr.words import count

T = TypeVar("T")
ROW_GROUP = 65_536


def split_days(days: np.ndarray, valid_days: int = 1, test_days: int = 1) -> dict[str, np.ndarray]:
    """The time split of the distinct, sorted ``days`` (any day numbers): the last
    ``test_days`` test, the ``valid_days`` before them validation, the rest training. The one
    rule behind :func:`time_split` and the simulator's split of its days."""
    if days.size < valid_days + test_days + 1:
        raise ValueError(
            f"the log spans {count(days.size, 'day')}; a time split needs more than "
            f"{valid_days + test_days}"
        )
    test_from, valid_from = days.size - test_days, days.size - test_days - valid_days
    return {"train": days[:valid_from], "valid": days[valid_from:test_from],
            "test": days[test_from:]}  # fmt: skip


def time_split(
    requests: pa.Table, valid_days: int = 1, test_days: int = 1
) -> dict[str, np.ndarray]:
    """Row indices of the requests of each split by calendar day (UTC), split as
    :func:`split_days` says."""
    day = pc.cast(pc.cast(requests["timestamp"], pa.timestamp("ms")), pa.date32())
    day = day.cast(pa.int32()).to_numpy(zero_copy_only=False)
    days = split_days(np.unique(day), valid_days, test_days)
    return {name: np.flatnonzero(np.isin(day, of)) for name, of in days.items()}


def resolve_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it of ``location``: a local folder (a relative one from
    the working directory) or a URI that ``pyarrow.fs.FileSystem.from_uri`` opens. A URI that
    cannot be opened (unknown scheme, missing filesystem support, no access) is refused by
    name."""
    text = str(location)
    if "://" not in text:
        return on_filesystem(text, None)
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{text}: cannot open this location ({err})") from None


def on_filesystem(
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
    filesystem, target = on_filesystem(path, filesystem)
    with atomic_fs_file(filesystem, target) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP, filesystem=filesystem)
    return path


class ShardWriter:
    """Encoded impressions written as the shards of several splits (``directories``: each
    split's directory, in ``filesystem``, default: the local one), part by part, in bounded
    memory: a request's rows all go to shard ``request_row % shards`` of its split (rows of one
    request never straddle two processes), each shard's rows in request order, in row groups of
    ``ROW_GROUP`` rows. Every shard appears whole when the ``with`` block ends, or not at all
    when it raises. A directory that holds shard files already is refused: they would mix with
    the new ones."""

    def __init__(
        self, directories: dict[str, str], shards: int, filesystem: pafs.FileSystem | None = None
    ):
        if shards < 1:
            raise ValueError(f"data.shards {shards}: expected at least 1")
        self.shards, self.paths = shards, {}
        for split, directory in directories.items():
            filesystem, directory = on_filesystem(directory, filesystem)
            if _part_files(filesystem, directory):
                raise FileExistsError(f"{directory} holds shard files (part-*.parquet) already: "
                                      "delete them or write the shards elsewhere")  # fmt: skip
            self.paths[split] = [posixpath.join(directory, f"part-{i:05d}.parquet")
                                 for i in range(shards)]  # fmt: skip
        self.filesystem = filesystem or pafs.LocalFileSystem()
        self.splits = list(self.paths)
        self.stack = ExitStack()
        self.writers: list[pq.ParquetWriter] = []
        self.pending: list[list[pa.Table]] = []
        self.last_request = -1
        self.finished: set[int] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def add(self, table: pa.Table, split: np.ndarray) -> None:
        """Rows sorted by ``request_row``, of requests after those of every earlier part;
        ``split``: each row's split, an index into the directories."""
        if table.num_rows == 0:
            return
        rows = table["request_row"].to_numpy()
        if rows[0] < self.last_request:
            raise ValueError("shard rows must come in request order: request row "
                             f"{rows[0]} after {self.last_request}")  # fmt: skip
        self.last_request = int(rows[-1])
        done = self.finished.intersection(np.unique(split).tolist())
        if done:
            raise ValueError(f"rows of split {min(done)} after it was finished")
        if not self.writers:
            self._open(table.schema)
        target = split * self.shards + rows % self.shards
        order = np.argsort(target, kind="stable")
        ends = np.searchsorted(target[order], np.arange(len(self.writers) + 1))
        for i in np.flatnonzero(np.diff(ends)):
            self.pending[i].append(table.take(pa.array(order[ends[i] : ends[i + 1]])))
            self._flush(i, final=False)

    def finish(self, split: int) -> None:
        """No more rows come for split ``split`` (an index into the directories): write the
        rows its shards hold back now, as the end of the ``with`` block would, rather than
        hold them while later splits are written (a time split's splits end one after
        another)."""
        if split in self.finished:
            return
        self.finished.add(split)
        for i in range(split * self.shards, (split + 1) * self.shards):
            if i < len(self.writers):
                self._flush(i, final=True)

    def _open(self, schema: pa.Schema) -> None:
        for split in self.splits:
            for path in self.paths[split]:
                tmp = self.stack.enter_context(atomic_fs_file(self.filesystem, path))
                self.writers.append(pq.ParquetWriter(tmp, schema, filesystem=self.filesystem))
                self.pending.append([])

    def _flush(self, i: int, final: bool) -> None:
        """Write shard ``i``'s whole row groups held back (all its rows when ``final``)."""
        held = sum(t.num_rows for t in self.pending[i])
        size = held if final else held - held % ROW_GROUP
        if size == 0:
            return
        rows = pa.concat_tables(self.pending[i])
        self.writers[i].write_table(rows.slice(0, size), row_group_size=ROW_GROUP)
        # the rest copied: a slice would hold the whole part it was cut from
        self.pending[i] = [rows.slice(size).take(np.arange(held - size))] if size < held else []

    def __exit__(self, kind: type | None, error: BaseException | None, trace: object) -> None:
        try:
            for i, writer in enumerate(self.writers):
                if kind is None:
                    self._flush(i, final=True)
                writer.close()
        finally:
            self.stack.__exit__(kind, error, trace)


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
    paths = _part_files(*on_filesystem(directory, filesystem))
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
