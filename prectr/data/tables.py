"""The three tables of a search log and their columns: each column's kind, canonical arrow type,
and whether it may be absent or null; the grade scale and where a grade may come from.

What the tables mean, and the rules across them, are :mod:`prectr.data.schema`'s; the checks
are :mod:`prectr.data.validation`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

GRADES = (0, 1, 2, 3)
RELEVANCE_SOURCES = ("human", "teacher", "simulator")
TABLES = ("items", "requests", "impressions")


@dataclass(frozen=True)
class Column:
    """One column of a table: its canonical arrow type and whether it may be absent or null.

    ``kind`` is ``id`` (int64 or string), ``string``, ``int``, ``float`` or ``timestamp``.
    """

    name: str
    kind: str
    arrow_type: pa.DataType | None
    required: bool
    nullable: bool
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


_ID = None  # an id column keeps int64 or string, whichever the log uses
SCHEMA: dict[str, Table] = {
    "items": Table(
        "items",
        key=("item_id",),
        columns=(
            Column("item_id", "id", _ID, True, False, "unique item identifier"),
            Column("title", "string", pa.string(), True, False, "item title, free text"),
            Column("category", "string", pa.string(), True, False, "leaf category name"),
            Column("brand", "string", pa.string(), True, True, "brand name"),
            Column("price", "float", pa.float64(), True, True, "price, >= 0"),
        ),
    ),
    "requests": Table(
        "requests",
        key=("request_id",),
        columns=(
            Column("request_id", "id", _ID, True, False, "unique request identifier"),
            Column("user_id", "id", _ID, True, False, "who searched"),
            Column("query", "string", pa.string(), True, False, "the query text"),
            Column("timestamp", "timestamp", pa.timestamp("ms"), True, False, "request time"),
            Column(
                "query_category", "string", pa.string(), False, True, "query classifier's category"
            ),
        ),
    ),
    "impressions": Table(
        "impressions",
        key=("request_id", "item_id"),
        columns=(
            Column("request_id", "id", _ID, True, False, "the request this candidate belongs to"),
            Column("item_id", "id", _ID, True, False, "the candidate item"),
            Column(
                "position", "int", pa.int32(), True, True, "1-based shown rank; null = unexposed"
            ),
            Column("click", "int", pa.int8(), True, True, "0/1 for exposed rows, null otherwise"),
            Column("relevance", "int", pa.int8(), True, True, "observed grade 0-3, null = unknown"),
            Column(
                "relevance_source",
                "string",
                pa.string(),
                True,
                True,
                "human | teacher | simulator; null iff relevance is null",
            ),
            Column("timestamp", "timestamp", pa.timestamp("ms"), False, True, "event time"),
            Column("true_relevance", "int", pa.int8(), False, True, "simulator truth (eval only)"),
            Column(
                "logging_score", "float", pa.float64(), False, True, "logging ranker (eval only)"
            ),
        ),
    ),
}


def canonical_type(col: Column, actual: pa.DataType) -> pa.DataType:
    """The type a column of the log is conformed to: its own, or for an id the int64 or string
    its values hold."""
    if col.kind == "id":
        return pa.int64() if pa.types.is_integer(actual) else pa.string()
    assert col.arrow_type is not None
    return col.arrow_type
