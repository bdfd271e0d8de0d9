"""Validation of a search log against the schema (:mod:`prectr.data.schema`): every problem,
each naming the table, the column, the first rows where it occurs and the file they are in.

The checks: required columns and their types, nulls where none may be, unique keys, ids of one
type across tables, references to known requests and items, prices, grades 0-3 with a known
source, positions and clicks (a click only on an exposed candidate, one item per position) and
event times no earlier than their request's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.tables import RELEVANCE_SOURCES, SCHEMA, TABLES, Column, Table, canonical_type
from prectr.words import count

MAX_ROWS_NAMED = 5


@dataclass(frozen=True)
class Problem:
    """One kind of problem in one column of one table, with the rows where it occurs."""

    table: str
    column: str | None
    message: str
    rows: tuple[int, ...] = ()
    count: int = 0
    source: str = ""

    def __str__(self) -> str:
        where = self.source or self.table
        if self.column is not None:
            where += f", column '{self.column}'"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows)
            more = self.count - len(self.rows)
            where += f", row{'s' if self.count > 1 else ''} {shown}"
            if more > 0:
                where += f" (+{more:,} more)"
        return f"{where}: {self.message}"


def rows_error(source: str, table: str, column: str, rows: np.ndarray, message: str) -> ValueError:
    """A :class:`Problem` in a loader's input file ``source`` as the error it raises: the
    table and column, the first :data:`MAX_ROWS_NAMED` of the 0-based ``rows`` and how many
    more there are."""
    shown = tuple(int(r) for r in rows[:MAX_ROWS_NAMED])
    return ValueError(str(Problem(table, column, message, shown, int(rows.size), source)))


class SchemaError(ValueError):
    """A log that breaks the schema; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem], what: str = "search log"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{what} fails schema validation ({count(len(problems), 'problem')}):\n{lines}"
        )


class LogTables(Protocol):
    """What the checks read of a log (a :class:`prectr.data.schema.SearchLog`): its three
    tables and the files each was read from, with their row counts."""

    items: pa.Table
    requests: pa.Table
    impressions: pa.Table
    sources: dict[str, list[tuple[str, int]]]

    def table(self, name: str) -> pa.Table: ...


def _type_ok(col: Column, actual: pa.DataType) -> bool:
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_null(actual):
        return col.nullable
    strings = pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if col.kind == "id":
        return pa.types.is_integer(actual) or strings
    if col.kind == "string":
        return strings
    if col.kind == "int":
        return pa.types.is_integer(actual)
    if col.kind == "float":
        return pa.types.is_integer(actual) or pa.types.is_floating(actual)
    return pa.types.is_timestamp(actual)


class _Collector:
    """Gathers problems, naming at most MAX_ROWS_NAMED rows of each (and the file they are in)."""

    def __init__(self, log: LogTables):
        self.problems: list[Problem] = []
        self.log = log

    def add(self, table: str, column: str | None, message: str, mask: np.ndarray | None = None):
        if mask is None:
            self.problems.append(Problem(table, column, message))
            return
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        self.problems.append(
            Problem(
                table,
                column,
                message,
                tuple(self._local_rows(table, rows[:MAX_ROWS_NAMED])),
                int(rows.size),
                self._source(table, int(rows[0])),
            )
        )

    def _files(self, table: str) -> list[tuple[str, int]]:
        return self.log.sources.get(table, [])

    def _source(self, table: str, row: int) -> str:
        files = self._files(table)
        if not files:
            return table
        starts = np.cumsum([0] + [n for _, n in files])
        return f"{table} ({files[int(np.searchsorted(starts, row, side='right')) - 1][0]})"

    def _local_rows(self, table: str, rows: np.ndarray) -> Iterable[int]:
        files = self._files(table)
        if len(files) <= 1:
            return (int(r) for r in rows)
        starts = np.cumsum([0] + [n for _, n in files])
        first = int(np.searchsorted(starts, rows[0], side="right")) - 1
        same_file = rows[(rows >= starts[first]) & (rows < starts[first + 1])]
        return (int(r - starts[first]) for r in same_file)


def validate(log: LogTables, tables: tuple[str, ...] = TABLES) -> list[Problem]:
    """Every schema problem of ``log``; an empty list means the log is valid. ``tables``: the
    tables whose problems are looked for (the others are read as references only), e.g. the
    impressions of a log read in chunks, each checked against the whole items and requests."""
    checked = _Collector(log)
    unchecked = _Collector(log)  # problems of tables not checked here are dropped
    usable: dict[str, set[str]] = defaultdict(set)
    for name in TABLES:
        table, spec = log.table(name), SCHEMA[name]
        found = checked if name in tables else unchecked
        for col in spec.columns:
            if col.name not in table.column_names:
                if col.required:
                    found.add(name, col.name, "required column is missing")
                continue
            actual = table.schema.field(col.name).type
            if not _type_ok(col, actual):
                found.add(name, col.name, f"dtype {actual}, expected {col.kind} ({col.doc})")
                continue
            usable[name].add(col.name)
            if not col.nullable and name in tables:
                found.add(
                    name, col.name, "null in a column that may not be null", _nulls(table, col)
                )
        if name in tables:
            _check_unique_key(found, name, table, spec, usable[name])
    if "items" in tables:
        _check_items(checked, log.items, usable["items"])
    if "impressions" in tables:
        _check_id_types(checked, log, usable)
        _check_references(checked, log, usable)
        _check_impressions(checked, log, usable)
    return checked.problems


def _nulls(table: pa.Table, col: Column) -> np.ndarray:
    return table[col.name].is_null().to_numpy(zero_copy_only=False)


def _id_values(a: pa.ChunkedArray) -> pa.ChunkedArray:
    """Id values as int64 or string, decoded from any dictionary, so that arrays compare."""
    value_type = a.type.value_type if pa.types.is_dictionary(a.type) else a.type
    return a.cast(pa.int64() if pa.types.is_integer(value_type) else pa.string())


def _codes(*arrays: pa.ChunkedArray) -> list[np.ndarray]:
    """Integer codes for ids of one or more arrays, shared across them (null -> -1)."""
    plain = [_id_values(a) for a in arrays]
    joined = pa.chunked_array([c for a in plain for c in a.chunks], type=plain[0].type)
    encoded = joined.dictionary_encode().combine_chunks()
    codes = encoded.indices.fill_null(-1).to_numpy().astype(np.int64)
    out, start = [], 0
    for a in arrays:
        out.append(codes[start : start + len(a)])
        start += len(a)
    return out


def _duplicated(keys: np.ndarray) -> np.ndarray:
    """Mask of rows whose key occurred in an earlier row."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    dup_sorted = np.zeros(keys.size, dtype=bool)
    dup_sorted[1:] = sorted_keys[1:] == sorted_keys[:-1]
    mask = np.zeros(keys.size, dtype=bool)
    mask[order] = dup_sorted
    return mask


def _combined_key(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    key = np.zeros(table.num_rows, dtype=np.int64)
    for name in columns:
        (codes,) = _codes(table[name])
        key = key * (int(codes.max(initial=0)) + 2) + codes + 1
    return key


def _check_unique_key(found: _Collector, name: str, table, spec: Table, usable: set[str]) -> None:
    if not set(spec.key) <= usable or table.num_rows == 0:
        return
    mask = _duplicated(_combined_key(table, spec.key))
    what = " and ".join(spec.key)
    found.add(name, spec.key[-1], f"duplicate {what} (repeats an earlier row)", mask)


def _check_id_types(found: _Collector, log: LogTables, usable: dict[str, set[str]]) -> None:
    for key, owner in (("item_id", "items"), ("request_id", "requests")):
        if key not in usable[owner] or key not in usable["impressions"]:
            continue
        a = canonical_type(SCHEMA[owner].column(key), log.table(owner).schema.field(key).type)
        b = canonical_type(SCHEMA[owner].column(key), log.impressions.schema.field(key).type)
        if a != b:
            found.add("impressions", key, f"ids are {b} here but {a} in {owner}")
            usable["impressions"].discard(key)


def _check_references(found: _Collector, log: LogTables, usable: dict[str, set[str]]) -> None:
    for key, owner in (("request_id", "requests"), ("item_id", "items")):
        if key in usable["impressions"] and key in usable[owner]:
            values = log.table(owner)[key]
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            known = pc.is_in(log.impressions[key], value_set=values.combine_chunks())
            unknown = ~known.to_numpy(zero_copy_only=False)
            unknown &= ~log.impressions[key].is_null().to_numpy(zero_copy_only=False)
            found.add("impressions", key, f"names an unknown {key} (not in {owner})", unknown)


def _check_items(found: _Collector, items: pa.Table, usable: set[str]) -> None:
    if "price" in usable:
        null = items["price"].is_null().to_numpy(zero_copy_only=False)
        price = items["price"].cast(pa.float64()).fill_null(0.0).to_numpy()
        with np.errstate(invalid="ignore"):
            found.add("items", "price", "negative or NaN price", ~null & ~(price >= 0))


def _int(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Values as int64 (nulls as 0) and the null mask."""
    col = table[name]
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    return col.cast(pa.int64()).fill_null(0).to_numpy(), nulls


def _check_impressions(found: _Collector, log: LogTables, usable: dict[str, set[str]]) -> None:
    imp, have = log.impressions, usable["impressions"]
    for grade_col in ("relevance", "true_relevance"):
        if grade_col in have:
            g, null = _int(imp, grade_col)
            bad = ~null & ((g < 0) | (g > 3))
            found.add("impressions", grade_col, "grade outside 0-3", bad)
    if {"position", "click"} <= have:
        pos, unexposed = _int(imp, "position")
        click, no_click = _int(imp, "click")
        found.add("impressions", "position", "position below 1", ~unexposed & (pos < 1))
        found.add("impressions", "click", "click other than 0 or 1", ~no_click & (click > 1))
        found.add("impressions", "click", "negative click", ~no_click & (click < 0))
        found.add(
            "impressions",
            "click",
            "click on an unexposed candidate (position is null)",
            unexposed & ~no_click,
        )
        found.add(
            "impressions",
            "click",
            "exposed impression without a click label",
            ~unexposed & no_click,
        )
        if "request_id" in have:
            ranked = ~unexposed & (pos >= 1)  # a position below 1 is reported above, not here
            key = _combined_key(imp, ("request_id",)) * (int(pos.max(initial=0)) + 1) + pos
            dup = np.zeros(imp.num_rows, dtype=bool)
            dup[ranked] = _duplicated(key[ranked])
            found.add("impressions", "position", "two items at the same position of a request", dup)
    if {"relevance", "relevance_source"} <= have:
        _, no_grade = _int(imp, "relevance")
        source = imp["relevance_source"].cast(pa.string())  # also decodes dictionary / all-null
        no_source = source.is_null().to_numpy(zero_copy_only=False)
        known = pc.is_in(source, value_set=pa.array(RELEVANCE_SOURCES)).to_numpy(
            zero_copy_only=False
        )
        found.add(
            "impressions",
            "relevance_source",
            f"unknown source (expected one of {', '.join(RELEVANCE_SOURCES)})",
            ~no_source & ~known,
        )
        found.add(
            "impressions", "relevance_source", "grade without a source", ~no_grade & no_source
        )
        found.add(
            "impressions", "relevance_source", "source without a grade", no_grade & ~no_source
        )
    _check_event_times(found, log, usable)


def _check_event_times(found: _Collector, log: LogTables, usable: dict[str, set[str]]) -> None:
    """An impression's own timestamp may not precede the timestamp of its request."""
    if (
        "timestamp" not in usable["impressions"]
        or not {"request_id", "timestamp"} <= usable["requests"]
    ):
        return
    if "request_id" not in usable["impressions"]:
        return
    req_codes, imp_codes = _codes(log.requests["request_id"], log.impressions["request_id"])
    # An unknown request or a null request time (both reported elsewhere) bounds nothing.
    unbounded = np.iinfo(np.int64).min
    request_time = np.full(
        int(max(req_codes.max(initial=-1), imp_codes.max(initial=-1))) + 1, unbounded
    )
    request_time[req_codes] = (
        log.requests["timestamp"].cast(pa.timestamp("ms")).cast(pa.int64()).fill_null(unbounded)
    ).to_numpy()
    event = log.impressions["timestamp"].cast(pa.timestamp("ms")).cast(pa.int64())
    no_event = event.is_null().to_numpy(zero_copy_only=False)
    event_ms = event.fill_null(0).to_numpy()
    before = ~no_event & (imp_codes >= 0) & (event_ms < request_time[np.maximum(imp_codes, 0)])
    found.add("impressions", "timestamp", "event logged before its request's timestamp", before)
