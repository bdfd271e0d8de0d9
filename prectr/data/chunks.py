"""A search log on disk, read in chunks of whole requests in time order, in bounded memory.

The items table is read whole: it grows with the catalogue, not with the traffic. The requests
table is read whole once, validated, put in time order (ties in the log's order) and cut into
chunks of about ``chunk_rows`` candidates that never split an instant, so every event of a
chunk happened strictly before every request of the next one; each chunk's requests are then
filed in a scratch folder, and only the requests' ids and times stay in memory (what filing the
impressions and the time split read). The impressions, the bulk of a log, are never held at
once. One pass over them (their files, batch by batch) files each row under its request's chunk
(a parquet file per chunk); each chunk is then read back whole, its candidates in the log's
order. A second pass
validates every chunk against the schema and the whole items and requests tables (a chunk
holds whole requests, so every check of a request's candidates is complete; problems name the
log's file and row) and notes the first request that shows each item.

:class:`LogChunks` is what a distributed engine would partition the same way: the chunk of each
request is a function of its time alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from prectr.data.schema import (
    Problem,
    SchemaError,
    SearchLog,
    conform_table,
    read_table,
    table_files,
    validate,
)

CHUNK_ROWS = 1_000_000  # candidates encoded together (about 0.1 GB of working memory)
_READ_ROWS = 262_144  # impressions read at once while filing them under their chunks


class LogChunks:
    """A log directory's items (validated, conformed), the ids and times of its requests in
    time order (``requests``: request_id and timestamp), and its requests' every column and its
    impressions filed by chunk in a scratch folder, removed by :meth:`close` (or on leaving a
    ``with`` block). Chunk ``k`` is the requests ``bounds[k]:bounds[k + 1]`` and all their
    candidates; :meth:`request_rows` reads the requests' other columns back, all at once, and
    :meth:`request_parts` chunk by chunk."""

    def __init__(self, root: str | Path, chunk_rows: int = CHUNK_ROWS):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows {chunk_rows}: expected at least 1")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such log directory")
        self.files = [str(f) for f in table_files(self.root, "impressions")]
        items, item_files = read_table(self.root, "items")
        requests, request_files = read_table(self.root, "requests")
        self._check(SearchLog(items, requests, self._empty_impressions(),
                              {"items": item_files, "requests": request_files}),
                    ("items", "requests"))  # fmt: skip
        self.items = conform_table("items", items)
        requests = conform_table("requests", requests)
        time = requests["timestamp"].cast(pa.int64()).to_numpy()
        if (time[1:] < time[:-1]).any():  # (a log in time order is not copied)
            order = np.argsort(time, kind="stable")
            requests, time = requests.take(pa.array(order)), time[order]
        self.bounds = _bounds(time, chunk_rows, self._rows())
        self.scratch = Path(tempfile.mkdtemp(prefix="prectr-chunks-"))
        try:
            for k in range(self.chunks):
                pq.write_table(requests.slice(self.bounds[k], self.bounds[k + 1] - self.bounds[k]),
                               self._requests_file(k))  # fmt: skip
            self.requests = requests.select(["request_id", "timestamp"])
            del requests  # (the other columns are read back by chunk)
            pa.default_memory_pool().release_unused()
            self._file_by_chunk(np.repeat(np.arange(self.chunks, dtype=np.int32),
                                          np.diff(self.bounds)))  # fmt: skip
            self.first_shown = self._scan()
        except BaseException:
            self.close()
            raise

    @property
    def chunks(self) -> int:
        return self.bounds.size - 1

    def __enter__(self) -> LogChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def chunk(self, k: int, columns: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
        """Chunk ``k``: its requests and their impressions (only ``columns`` of them, when
        given), in the log's order, conformed to the schema's types."""
        requests = pq.read_table(self._requests_file(k))
        impressions = self._impressions(k, columns)
        return requests, conform_table("impressions", impressions.drop_columns(["_file", "_row"]))

    def __iter__(self) -> Iterator[tuple[pa.Table, pa.Table]]:
        return (self.chunk(k, ["request_id", "item_id", "position", "click", "relevance"])
                for k in range(self.chunks))  # fmt: skip

    def request_rows(self, stop: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """The requests before row ``stop`` in time order (all of them when it is ``None``),
        every column or only ``columns``, read back from their chunks' files."""
        stop = self.requests.num_rows if stop is None else stop
        chunks = max(1, int(np.searchsorted(self.bounds, stop, side="left")))
        parts = itertools.islice(self.request_parts(columns), chunks)
        return pa.concat_tables(parts).slice(0, stop)

    def request_parts(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Each chunk's requests in turn, every column or only ``columns``: what a pass over
        all the requests reads without holding them all."""
        return (pq.read_table(self._requests_file(k), columns=columns) for k in range(self.chunks))

    def seen_before(self, request_row: int) -> pa.Table:
        """The items some request before row ``request_row`` shows, in the items' order (the
        items a model fitted on those requests has seen)."""
        return self.items.filter(pa.array(self.first_shown < request_row))

    def _rows(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def _empty_impressions(self) -> pa.Table:
        if not self.files:  # refused by name
            read_table(self.root, "impressions")
        return ds.dataset(self.files, format="parquet").schema.empty_table()

    def _requests_file(self, k: int) -> Path:
        return self.scratch / f"requests-{k}.parquet"

    def _impressions(self, k: int, columns: list[str] | None) -> pa.Table:
        wanted = None if columns is None else [*columns, "_file", "_row"]
        path = self.scratch / f"{k}.parquet"
        if not path.is_file():  # no request of the chunk has a candidate
            empty = self.schema.empty_table()
            return empty if wanted is None else empty.select(wanted)
        return pq.read_table(path, columns=wanted)

    def _file_by_chunk(self, chunk_of_request: np.ndarray) -> None:
        """Write every impression under its request's chunk, in the log's order (one whose
        request is unknown under chunk 0, where validation names it), each piece as a row
        group of its own: a file writer that held its row group open until a million rows
        would hold most of the log across the chunks' files."""
        schema = ds.dataset(self.files, format="parquet").schema
        bookkeeping = [("_file", pa.int32()), ("_row", pa.int64())]
        self.schema = pa.schema([*schema, *(pa.field(*f) for f in bookkeeping)])
        ids = self.requests["request_id"]
        with ExitStack() as files:
            writers: dict[int, pq.ParquetWriter] = {}
            for index, path in enumerate(self.files):
                start = 0
                for batch in pq.ParquetFile(path).iter_batches(_READ_ROWS):
                    try:
                        batch = _aligned(batch, schema)
                        found = pc.index_in(batch["request_id"].cast(ids.type), value_set=ids)
                    except (pa.ArrowException, KeyError) as err:
                        raise SchemaError([Problem("impressions", None, f"columns differ from "
                                                   f"the first file's ({err})", source=path)],
                                          what=f"search log at {self.root}") from None  # fmt: skip
                    row = found.fill_null(-1).to_numpy(zero_copy_only=False)
                    chunk = np.where(row >= 0, chunk_of_request[np.maximum(row, 0)], 0)
                    n = batch.num_rows
                    table = pa.Table.from_batches([pa.RecordBatch.from_arrays(
                        [*batch.columns, pa.array(np.full(n, index, np.int32)),
                         pa.array(np.arange(start, start + n, dtype=np.int64))],
                        schema=self.schema)])  # fmt: skip
                    order = np.argsort(chunk, kind="stable")
                    ends = np.flatnonzero(np.diff(chunk[order])) + 1
                    for rows in np.split(order, ends):
                        k = int(chunk[rows[0]])
                        if k not in writers:
                            writers[k] = files.enter_context(
                                pq.ParquetWriter(self.scratch / f"{k}.parquet", self.schema)
                            )
                        writers[k].write_table(table.take(pa.array(rows)))
                    start += n
                    pa.default_memory_pool().release_unused()

    def _scan(self) -> np.ndarray:
        """Validate every chunk (raising :class:`SchemaError` with every problem) and return,
        per item, the row of the first request that shows it (the number of requests if
        none)."""
        problems: dict[tuple, Problem] = {}
        first = np.full(self.items.num_rows, self.requests.num_rows, dtype=np.int64)
        item_ids = self.items["item_id"]
        for k in range(self.chunks):
            # a chunk's impressions name its own requests (an unknown one is in chunk 0)
            requests = self.requests.slice(self.bounds[k], self.bounds[k + 1] - self.bounds[k])
            impressions = self._impressions(k, None)
            log = SearchLog(self.items, requests, impressions.drop_columns(["_file", "_row"]))
            found = self._check(log, ("impressions",), impressions)
            for p in found:
                key = (p.table, p.column, p.message)
                known = problems.get(key)
                problems[key] = p if known is None else dataclasses.replace(
                    known, count=known.count + p.count)  # fmt: skip
            if found or problems:
                continue
            item = pc.index_in(impressions["item_id"], value_set=item_ids).to_numpy()
            row = pc.index_in(impressions["request_id"], value_set=requests["request_id"])
            np.minimum.at(first, item, row.to_numpy() + self.bounds[k])
            pa.default_memory_pool().release_unused()
        if problems:
            raise SchemaError(list(problems.values()), what=f"search log at {self.root}")
        return first

    def _check(
        self, log: SearchLog, tables: tuple[str, ...], located: pa.Table | None = None
    ) -> list[Problem]:
        """The problems of ``tables`` of ``log``; of the items and requests, raised at once.
        ``located``: the chunk's impressions with their files and rows, to name them."""
        problems = validate(log, tables)
        if located is None:
            if problems:
                raise SchemaError(problems, what=f"search log at {self.root}")
            return problems
        file_of = located["_file"].to_numpy()
        row_of = located["_row"].to_numpy()
        return [_located(p, self.files, file_of, row_of) for p in problems]


def _aligned(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the columns of ``schema``, in its order and types (null where absent)."""
    names = batch.schema.names
    columns = [batch.column(f.name) if f.name in names else pa.nulls(batch.num_rows, f.type)
               for f in schema]  # fmt: skip
    return pa.RecordBatch.from_arrays(columns, names=schema.names).cast(schema)


def _located(
    problem: Problem, files: list[str], file_of: np.ndarray, row_of: np.ndarray
) -> Problem:
    """``problem`` of a chunk's impressions with its rows named in the log's file of the first
    of them."""
    if not problem.rows:
        return problem
    rows = np.asarray(problem.rows)
    where = file_of[rows[0]]
    named = row_of[rows[file_of[rows] == where]]
    return dataclasses.replace(problem, rows=tuple(int(r) for r in named),
                               source=f"impressions ({files[where]})")  # fmt: skip


def _bounds(time: np.ndarray, chunk_rows: int, rows: int) -> np.ndarray:
    """Chunk bounds over requests in time order: about ``chunk_rows`` candidates each (at the
    log's mean candidates per request), every cut moved on to the next new instant."""
    n = time.size
    step = max(1, int(chunk_rows * n / max(rows, 1)))
    bounds = [0]
    while bounds[-1] < n:
        cut = min(bounds[-1] + step, n)
        if cut < n:  # the first request at a later instant than the one before the cut
            cut = int(np.searchsorted(time, time[cut - 1], side="right"))
        bounds.append(cut)
    return np.asarray(bounds, dtype=np.int64)
