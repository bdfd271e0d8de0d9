"""Load the Amazon Shopping Queries dataset (ESCI) into a :class:`~prectr.data.schema.SearchLog`.

Reads the dataset's own parquet files (Reddy et al., arXiv:2206.06588, Apache-2.0):
``shopping_queries_dataset_examples.parquet`` (one judged query-product pair per row) and
``shopping_queries_dataset_products.parquet`` (one product per row and locale).

ESCI is a set of human relevance judgments, not a behaviour log, so the mapping fills what it
lacks with documented constants:

* ``items``: one row per product of the chosen locale that a kept example judges;
  ``item_id`` = ``product_id`` (ASIN string), ``title`` = ``product_title`` (a missing title
  becomes the ``product_id``, since a title may not be null), ``category`` =
  :data:`ESCI_CATEGORY` (ESCI has no category), ``brand`` = ``product_brand``, ``price`` null.
* ``requests``: one row per ``query_id``; ``request_id`` = ``query_id``, ``query`` = ``query``,
  ``user_id`` = :data:`ESCI_USER` (ESCI has no users) and ``timestamp`` = :data:`ESCI_TIMESTAMP`
  for every request (ESCI has no times). Sharing one instant means no request has any history,
  which is right: ESCI records no behaviour.
* ``impressions``: one row per kept example, the judged candidates of the query; ``position``
  and ``click`` null (nothing was shown or clicked), ``relevance`` from ``esci_label`` (E=3,
  S=2, C=1, I=0), ``relevance_source`` = ``"human"``. The extra columns ``example_id`` and
  ``split`` trace each row back to the examples file.

With one instant there is no time split: the student encoder holds out a hashed share of the
queries instead (``prectr encoder sft LOG --held-out query``), or ESCI's own test split loaded
as a second log (``load_esci(..., split="test")``, then ``--held-out TEST_LOG`` with the train
split's log); see :mod:`prectr.encoder.pairs`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prectr.data.schema import SchemaError, SearchLog
from prectr.data.validation import rows_error

# The index of a label is its grade: Irrelevant 0, Complement 1, Substitute 2, Exact 3.
ESCI_LABELS = ("I", "C", "S", "E")
ESCI_USER = "anonymous"
ESCI_TIMESTAMP = dt.datetime(2022, 1, 1)  # arbitrary: ESCI has no times
ESCI_CATEGORY = "unknown"
EXAMPLE_COLUMNS = ("example_id", "query", "query_id", "product_id", "product_locale", "esci_label")
PRODUCT_COLUMNS = ("product_id", "product_title", "product_brand", "product_locale")


def load_esci(
    examples: str | Path, products: str | Path, locale: str = "us", split: str | None = None
) -> SearchLog:
    """Map ESCI's examples and products parquet files, for one locale, into a search log.

    ``locale`` is a ``product_locale`` value (``us``, ``es`` or ``jp``); ``split`` (``train`` or
    ``test``), when given, keeps only that split. Raises :class:`ValueError` naming the file, row
    and column of malformed input, and :class:`~prectr.data.schema.SchemaError` if the result
    breaks the schema (for instance an example whose product is missing from ``products``).
    """
    table, file_rows = _read_examples(Path(examples), locale, split)
    grades = _check_examples(table, file_rows, Path(examples))
    requests = _requests(table, file_rows, Path(examples))
    item_ids = pc.unique(table["product_id"])
    log = SearchLog(
        items=_items(Path(products), locale, item_ids),
        requests=requests,
        impressions=pa.table(
            {
                "request_id": table["query_id"],
                "item_id": table["product_id"],
                "position": pa.nulls(table.num_rows, pa.int32()),
                "click": pa.nulls(table.num_rows, pa.int8()),
                "relevance": grades,
                "relevance_source": pa.repeat("human", table.num_rows),
                "example_id": table["example_id"],
                "split": table["split"],
            }
        ),
    )
    try:
        return log.check()
    except SchemaError as err:
        raise SchemaError(err.problems, what=f"ESCI log from {examples} and {products}") from None


def _require(path: Path, columns: tuple[str, ...]) -> None:
    found = pq.read_schema(path).names
    missing = [c for c in columns if c not in found]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(found)})"
        )


def _read_examples(path: Path, locale: str, split: str | None) -> tuple[pa.Table, np.ndarray]:
    """The examples of ``locale`` (and ``split``) and their 0-based row numbers in the file."""
    columns = (*EXAMPLE_COLUMNS, "split")
    _require(path, columns)
    table = pq.read_table(path, columns=list(columns))
    keep = pc.equal(table["product_locale"], locale)
    if not pc.any(keep).as_py():
        present = sorted(v for v in pc.unique(table["product_locale"]).to_pylist() if v)
        raise ValueError(f"{path}: no example has product_locale {locale!r} (present: {present})")
    if split is not None:
        in_locale = table.filter(keep)
        keep = pc.and_(keep, pc.equal(table["split"], split))
        if not pc.any(keep).as_py():
            present = sorted(v for v in pc.unique(in_locale["split"]).to_pylist() if v)
            raise ValueError(
                f"{path}: no {locale!r} example has split {split!r} (present: {present})"
            )
    mask = keep.fill_null(False).to_numpy(zero_copy_only=False)
    return table.filter(mask), np.flatnonzero(mask)


def _check_examples(table: pa.Table, file_rows: np.ndarray, path: Path) -> pa.Array:
    """Refuse nulls and unknown labels, naming the file rows; return the grades."""
    for name in EXAMPLE_COLUMNS:
        null = table[name].is_null().to_numpy(zero_copy_only=False)
        if null.any():
            raise rows_error(str(path), "examples", name, file_rows[null], "null")
    grades = pc.index_in(table["esci_label"], value_set=pa.array(ESCI_LABELS))
    bad = grades.is_null().to_numpy(zero_copy_only=False)
    if bad.any():
        first = table["esci_label"][int(np.flatnonzero(bad)[0])].as_py()
        expected = ", ".join(reversed(ESCI_LABELS))
        raise rows_error(
            str(path),
            "examples",
            "esci_label",
            file_rows[bad],
            f"{first!r} is not one of {expected}",
        )
    return grades.cast(pa.int8()).combine_chunks()


def _requests(table: pa.Table, file_rows: np.ndarray, path: Path) -> pa.Table:
    """One request per query_id; every row of one query_id must carry the same query text."""
    texts = table.group_by("query_id").aggregate([("query", "count_distinct")])
    ambiguous = texts.filter(pc.greater(texts["query_count_distinct"], 1))
    if ambiguous.num_rows:
        query_id = ambiguous["query_id"][0]
        rows = pc.equal(table["query_id"], query_id).to_numpy(zero_copy_only=False)
        seen = pc.unique(table.filter(rows)["query"]).to_pylist()
        message = f"query_id {query_id.as_py()!r} has several query texts {seen}"
        raise rows_error(str(path), "examples", "query", file_rows[rows], message)
    _, first = np.unique(table["query_id"].to_numpy(zero_copy_only=False), return_index=True)
    return pa.table(
        {
            "request_id": table["query_id"].take(first),
            "user_id": pa.repeat(ESCI_USER, first.size),
            "query": table["query"].take(first),
            "timestamp": pa.repeat(pa.scalar(ESCI_TIMESTAMP, pa.timestamp("ms")), first.size),
        }
    )


def _items(path: Path, locale: str, item_ids: pa.Array) -> pa.Table:
    """The products of ``locale`` named in ``item_ids``."""
    _require(path, PRODUCT_COLUMNS)
    products = pq.read_table(
        path, columns=list(PRODUCT_COLUMNS), filters=pc.field("product_locale") == locale
    )
    products = products.filter(pc.is_in(products["product_id"], value_set=item_ids))
    return pa.table(
        {
            "item_id": products["product_id"],
            "title": pc.coalesce(products["product_title"], products["product_id"]),
            "category": pa.repeat(ESCI_CATEGORY, products.num_rows),
            "brand": products["product_brand"],
            "price": pa.nulls(products.num_rows, pa.float64()),
        }
    )
