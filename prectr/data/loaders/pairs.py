"""Load a file of human-graded (query, title) pairs into a :class:`~prectr.data.schema.SearchLog`.

The file most teams with relevance judgments have: one row per judged pair, with a ``query``
column, a ``title`` column and an integer grade (the first of ``grade``, ``relevance`` and
``label`` present; an integral number, or one written as text as JSON exports often do: "2",
"+2", "2.0").
``columns`` renames any of the three (``{"grade": "score"}``). The format follows the suffix:
``.csv``, ``.tsv``, ``.json`` or ``.jsonl`` (one JSON object per line) and ``.parquet``. A grade
on another scale than 0-3 is mapped by ``grade_map`` (:mod:`prectr.data.grades`); without one,
every grade must be 0-3 already.

Like ESCI, such a file records judgments, not behaviour, so the mapping fills what it lacks with
documented constants:

* ``requests``: one per distinct query text (integer ``request_id`` in order of first
  appearance), ``user_id`` = :data:`PAIRS_USER`, ``timestamp`` = :data:`PAIRS_TIMESTAMP` for
  every request. A (query, title) pair judged twice cannot be two candidates of one request, so
  its second judgment goes to a second request of the same query, its third to a third: no
  judgment is dropped, and the encoder merges a pair's grades by its documented rule
  (:mod:`prectr.encoder.pairs`).
* ``items``: one per distinct title text (integer ``item_id`` in order of first appearance),
  ``category`` = :data:`PAIRS_CATEGORY`, ``brand`` and ``price`` null.
* ``impressions``: one per row of the file; ``position`` and ``click`` null, ``relevance`` the
  grade, ``relevance_source`` = ``"human"``, and ``pair_row``, the row's 0-based number among
  the file's data rows (the header and blank lines not counted), to trace it back.

One instant means no time split: train and score the student encoder with ``--held-out query``,
or load a second file (a test split) as its own log and hold it out with ``--held-out LOG``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from prectr.data.grades import format_grade_map, map_grades
from prectr.data.schema import GRADES, SchemaError, SearchLog
from prectr.data.validation import rows_error

PAIRS_USER = "anonymous"
PAIRS_TIMESTAMP = dt.datetime(2022, 1, 1)  # arbitrary: a file of judgments has no times
PAIRS_CATEGORY = "unknown"
GRADE_NAMES = ("grade", "relevance", "label")
ROLES = ("query", "title", "grade")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_pairs(
    path: str | Path,
    grade_map: dict[int, int] | None = None,
    columns: dict[str, str] | None = None,
) -> SearchLog:
    """Map a graded pairs file into a search log (see the module docstring).

    Raises :class:`ValueError` naming the file, the 0-based row and the column of malformed
    input (an empty query or title, a grade that is not an integer, a grade outside 0-3 with no
    ``grade_map``, a value the map does not name), and the columns found when one is missing.
    """
    path = Path(path)
    unknown = sorted(set(columns or {}) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown column role(s) {', '.join(unknown)} (roles: {', '.join(ROLES)})")
    table = _read(path, columns or {})
    query_code, queries = _codes(table, path, "query")
    title_code, titles = _codes(table, path, "title")
    grades = _grades(table["grade"], path, grade_map)
    request, first_row = _requests(query_code, title_code, len(titles))
    n_requests, n_items = first_row.size, len(titles)
    log = SearchLog(
        items=pa.table(
            {
                "item_id": pa.array(np.arange(n_items)),
                "title": titles,
                "category": pa.repeat(PAIRS_CATEGORY, n_items),
                "brand": pa.nulls(n_items, pa.string()),
                "price": pa.nulls(n_items, pa.float64()),
            }
        ),
        requests=pa.table(
            {
                "request_id": pa.array(np.arange(n_requests)),
                "user_id": pa.repeat(PAIRS_USER, n_requests),
                "query": queries.take(query_code[first_row]),
                "timestamp": pa.repeat(pa.scalar(PAIRS_TIMESTAMP, pa.timestamp("ms")), n_requests),
            }
        ),
        impressions=pa.table(
            {
                "request_id": pa.array(request),
                "item_id": pa.array(title_code),
                "position": pa.nulls(table.num_rows, pa.int32()),
                "click": pa.nulls(table.num_rows, pa.int8()),
                "relevance": grades,
                "relevance_source": pa.repeat("human", table.num_rows),
                "pair_row": pa.array(np.arange(table.num_rows)),
            }
        ),
    )
    try:
        return log.check()
    except SchemaError as err:
        raise SchemaError(err.problems, what=f"graded pairs log from {path}") from None


def _read(path: Path, columns: dict[str, str]) -> pa.Table:
    """The file's query, title and grade columns, named by their roles."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown format {path.suffix!r} (one of {', '.join(FORMATS)})")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        if kind == "parquet":
            table = pq.read_table(path)
        elif kind == "json":
            table = _json_lines(path)
        else:
            table = _delimited(path, "\t" if kind == "tsv" else ",")
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:  # malformed CSV, not UTF-8
        raise ValueError(f"{path}: not readable as {kind}: {err}") from None
    if not table.num_rows:
        raise ValueError(f"{path}: no rows")
    found = table.column_names
    repeated = sorted({n for n in found if found.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: column name(s) {', '.join(repeated)} used more than once")
    names = dict(columns)
    if "grade" not in names:
        names["grade"] = next((n for n in GRADE_NAMES if n in found), GRADE_NAMES[0])
    names.setdefault("query", "query")
    names.setdefault("title", "title")
    missing = [f"{names[role]} ({role})" for role in ROLES if names[role] not in found]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(found)}); name "
            "them with columns, e.g. `prectr load pairs FILE --columns grade=score`"
        )
    return pa.table({role: table[names[role]] for role in ROLES})


def _json_lines(path: Path) -> pa.Table:
    """One JSON object per line, every value as text (a number as written, null and a missing
    key as null), so that one column holding numbers and strings reads row by row; blank lines
    are skipped, so a row's number counts objects, not lines."""
    rows = []
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_int=str, parse_float=str)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: not a JSON object")
            rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.table({name: pa.array([_as_text(row.get(name)) for row in rows], pa.string())
                     for name in names})  # fmt: skip


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _delimited(path: Path, delimiter: str) -> pa.Table:
    """CSV (quoted fields may hold the delimiter and newlines) or TSV (no quoting: a quote is
    text), every column as text, an empty field as an empty string. The header is pyarrow's
    own reading of it (a byte-order mark dropped, blank lines skipped), so that no column is
    left to type inference."""
    quoted = delimiter == ","
    options = pacsv.ParseOptions(
        delimiter=delimiter, quote_char='"' if quoted else False, newlines_in_values=quoted
    )
    with pacsv.open_csv(path, parse_options=options) as reader:
        header = reader.schema.names
    return pacsv.read_csv(
        path,
        parse_options=options,
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in header}),
    )


def _codes(table: pa.Table, path: Path, role: str) -> tuple[np.ndarray, pa.Array]:
    """Each row's index into the ``role`` column's distinct texts, and those texts, in order of
    first appearance; a null or blank text is refused with its rows."""
    column = table[role].cast(pa.string()).combine_chunks()
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)
    bad = blank.to_numpy(zero_copy_only=False)
    if bad.any():
        raise rows_error(str(path), "pairs", role, np.flatnonzero(bad), f"empty {role}")
    encoded = column.dictionary_encode()
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary


def _grades(column: pa.ChunkedArray, path: Path, grade_map: dict[int, int] | None) -> pa.Array:
    """The grades as int8 0-3: integers, integral floats, or such numbers written as text
    (``"2"``, ``"+2"``, ``"2.0"``); mapped by ``grade_map``."""
    column = column.combine_chunks()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_trim_whitespace(column)
        number = pc.match_substring_regex(column, r"^[+-]?[0-9]{1,18}(\.0*)?$")
        bad = pc.invert(pc.fill_null(number, False)).to_numpy(zero_copy_only=False)
        integers = pc.replace_substring_regex(column, r"^\+|\.0*$", "")
    elif pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2**53)
        integers = column
    elif pa.types.is_integer(column.type) or pa.types.is_null(column.type):
        bad = column.is_null().to_numpy(zero_copy_only=False)
        integers = column
    else:
        raise ValueError(f"{path}: the grade column is {column.type}; it must hold integers")
    if bad.any():
        first = column[int(np.flatnonzero(bad)[0])].as_py()
        raise rows_error(
            str(path), "pairs", "grade", np.flatnonzero(bad), f"{first!r} is not an integer grade"
        )
    grades = integers.cast(pa.int64())
    if grade_map is not None:
        return map_grades(grades, grade_map, f"{path}:")
    outside = pc.invert(pc.is_in(grades, value_set=pa.array(GRADES, pa.int64())))
    rows = np.flatnonzero(outside.to_numpy(zero_copy_only=False))
    if rows.size:
        seen = sorted(set(pc.unique(grades).to_pylist()))
        example = format_grade_map({g: min(max(g, 0), 3) for g in seen})
        message = (
            f"{grades[int(rows[0])].as_py()} is not a grade 0-3 (the file's grades: "
            f"{seen}); map them onto 0-3 with a grade map, e.g. --grade-map {example}"
        )
        raise rows_error(str(path), "pairs", "grade", rows, message)
    return grades.cast(pa.int8())


def _requests(
    query_code: np.ndarray, title_code: np.ndarray, n_titles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's request (its query, and how often its pair came before) and each request's
    first row, requests numbered in order of first appearance."""
    pair = query_code * n_titles + title_code
    order = np.argsort(pair, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(pair[order])) + 1]
    occurrence = np.empty(pair.size, np.int64)
    occurrence[order] = np.arange(pair.size) - np.repeat(starts, np.diff(np.r_[starts, pair.size]))
    key = query_code * (int(occurrence.max(initial=0)) + 1) + occurrence
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse], np.sort(first)
