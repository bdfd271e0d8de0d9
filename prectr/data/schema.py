"""The search-log schema: the contract between a user's logs and the library.

A search log is three tables, each stored as ``NAME.parquet`` or as a directory ``NAME/`` of
parquet files inside one log directory:

``items``
    One row per item of the catalogue: ``item_id``, ``title`` (free text), ``category``,
    ``brand``, ``price``; any further columns are kept.
``requests``
    One row per search request: ``request_id``, ``user_id``, ``query`` (free text), ``timestamp``,
    and optionally ``query_category`` (the engine's query classifier output).
``impressions``
    One row per (request, candidate item): the coarse-ranking candidate pool of the request.
    ``position`` is the 1-based rank at which the item was shown, null for a candidate that was
    not exposed; ``click`` is 0/1 for exposed rows and null otherwise; ``relevance`` is a graded
    judgment 0-3 (0 irrelevant, 1 complement, 2 substitute, 3 exact, the ESCI meaning) or null
    when unknown, and ``relevance_source`` says where a known grade came from. An optional
    ``timestamp`` is the time the event was logged; it may not precede its request.

The impressions' ``true_relevance`` and ``logging_score`` (the simulator's true grade and its
logging ranker's score) may be present for evaluation; no model or feature may read them.

Identifiers are either all integers or all strings for one entity (``item_id`` in ``items`` and
``impressions`` share a type). :func:`validate` names the table, row and column of every problem
and reports all of them, not just the first.

The columns and their types are :mod:`prectr.data.tables`'s, the checks
:mod:`prectr.data.validation`'s; this module holds a log in memory, reads and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from prectr.data.tables import GRADES, SCHEMA, TABLES, canonical_type
from prectr.data.validation import MAX_ROWS_NAMED, Problem, SchemaError, validate
from prectr.io import atomic_dir

__all__ = [
    "GRADES",
    "MAX_ROWS_NAMED",
    "TABLES",
    "Problem",
    "SchemaError",
    "SearchLog",
    "conform",
    "conform_table",
    "read_log",
    "read_table",
    "table_files",
    "validate",
]


@dataclass
class SearchLog:
    """The three tables of a search log, in memory.

    ``sources`` maps a table name to the files it was read from with their row counts, so a
    problem in row ``r`` of a table split over several files can name the file and local row.
    """

    items: pa.Table
    requests: pa.Table
    impressions: pa.Table
    sources: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def table(self, name: str) -> pa.Table:
        return getattr(self, name)

    def validate(self) -> list[Problem]:
        return validate(self)

    def check(self) -> SearchLog:
        """Raise :class:`SchemaError` listing every problem; return the conformed log if none."""
        problems = self.validate()
        if problems:
            raise SchemaError(problems, what=self._label())
        return conform(self)

    def write(self, out: str | Path, overwrite: bool = False) -> Path:
        """Validate, then write ``items/requests/impressions.parquet`` atomically into ``out``.

        Nothing is written when validation fails.
        """
        log = self.check()
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for name in TABLES:
                pq.write_table(log.table(name), tmp / f"{name}.parquet")
        return Path(out)

    def _label(self) -> str:
        files = [f for name in TABLES for f, _ in self.sources.get(name, [])]
        return f"search log at {Path(files[0]).parent}" if files else "search log"


def table_files(root: str | Path, name: str) -> list[Path]:
    """The parquet files holding table ``name`` under a log directory, in a stable order."""
    root = Path(root)
    single = root / f"{name}.parquet"
    if single.is_file():
        return [single]
    folder = root / name
    if folder.is_dir():
        return sorted(folder.rglob("*.parquet"))
    return []


def read_log(
    root: str | Path, columns: dict[str, list[str]] | None = None, validate_log: bool = True
) -> SearchLog:
    """Read a log directory; validate it (raising :class:`SchemaError`) and conform its types.

    ``columns`` optionally restricts which columns of each table are read; validation then
    checks only what was read, plus the cross-table references.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such log directory")
    missing = [_missing(root, name) for name in TABLES if not table_files(root, name)]
    if missing:
        raise SchemaError(missing, what=f"search log at {root}")
    tables: dict[str, pa.Table] = {}
    sources: dict[str, list[tuple[str, int]]] = {}
    for name in TABLES:
        wanted = None if columns is None else columns.get(name)
        tables[name], sources[name] = read_table(root, name, wanted)
    log = SearchLog(tables["items"], tables["requests"], tables["impressions"], sources)
    return log.check() if validate_log else conform(log)


def read_table(
    root: str | Path, name: str, columns: list[str] | None = None
) -> tuple[pa.Table, list[tuple[str, int]]]:
    """Table ``name`` of a log directory (only ``columns`` of it, when given) and the files it
    was read from with their row counts; a missing table is refused by name."""
    files = table_files(root, name)
    if not files:
        raise SchemaError([_missing(root, name)], what=f"search log at {root}")
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    parts = [
        pq.read_table(f, columns=columns, schema=dataset.schema if columns is None else None)
        for f in files
    ]
    sources = [(str(f), t.num_rows) for f, t in zip(files, parts, strict=True)]
    return pa.concat_tables(parts, promote_options="permissive").combine_chunks(), sources


def _missing(root: str | Path, name: str) -> Problem:
    return Problem(name, None, f"table missing: expected {name}.parquet or {name}/ in {root}")


def conform(log: SearchLog) -> SearchLog:
    """Cast every known column to its canonical type; add absent required nullable columns."""
    out = {name: conform_table(name, log.table(name)) for name in TABLES}
    return SearchLog(out["items"], out["requests"], out["impressions"], log.sources)


def conform_table(name: str, table: pa.Table) -> pa.Table:
    """:func:`conform` of one table of a log, ``name``."""
    for col in SCHEMA[name].columns:
        if col.name not in table.column_names:
            if col.required and col.nullable:
                table = table.append_column(col.name, pa.nulls(table.num_rows, col.arrow_type))
            continue
        target = canonical_type(col, table.schema.field(col.name).type)
        index = table.column_names.index(col.name)
        if table.schema.field(col.name).type != target:
            table = table.set_column(index, col.name, table[col.name].cast(target))
    return table
