"""A log's impressions as the arrays that off-policy estimation reads: which request and which
(query, item) pair each row is, where it was shown and whether it was clicked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IMPRESSION_COLUMNS = ("request_id", "item_id", "position", "click")
REQUEST_COLUMNS = ("request_id", "query")


@dataclass(frozen=True)
class LoggedRows:
    """One entry per impression row (exposed or not), in the table's row order."""

    request_ids: pa.Array  # the distinct request ids; ``request`` indexes into it
    request: np.ndarray  # int64 request index
    item: np.ndarray  # int64 item code, in the order of the item ids
    pair: np.ndarray  # int64 code of the (query, item) pair
    position: np.ndarray  # int64 shown position, 0 where unexposed
    click: np.ndarray  # float64 0/1, 0 where unexposed
    grade: np.ndarray  # int64 observed relevance grade 0-3, -1 where unknown

    @property
    def exposed(self) -> np.ndarray:
        return self.position > 0

    @classmethod
    def from_tables(cls, impressions: pa.Table, requests: pa.Table) -> LoggedRows:
        """Rows of ``impressions`` (request_id, item_id, position, click; relevance if present)
        with each request's query from ``requests`` (request_id, query)."""
        _require(impressions, IMPRESSION_COLUMNS, "impressions")
        _require(requests, REQUEST_COLUMNS, "requests")
        request = pc.dictionary_encode(impressions["request_id"]).combine_chunks()
        item = pc.dictionary_encode(impressions["item_id"]).combine_chunks()
        query = _query_codes(impressions, requests)
        item_order = pc.rank(item.dictionary, sort_keys="ascending").to_numpy() - 1
        item_code = item_order[item.indices.to_numpy()].astype(np.int64)
        position = impressions["position"].fill_null(0).to_numpy().astype(np.int64)
        unclicked = pc.and_(pc.is_valid(impressions["position"]), pc.is_null(impressions["click"]))
        missing = pc.sum(unclicked.cast(pa.int64())).as_py() or 0
        if missing:
            raise ValueError(f"impressions: {missing} shown rows (position set) have no click")
        if (position < 0).any():
            raise ValueError("impressions: position must be >= 1 where set")
        grade = (
            impressions["relevance"].fill_null(-1).to_numpy().astype(np.int64)
            if "relevance" in impressions.column_names
            else np.full(impressions.num_rows, -1, np.int64)
        )
        return cls(
            request_ids=request.dictionary,
            request=request.indices.to_numpy().astype(np.int64),
            item=item_code,
            pair=query * len(item.dictionary) + item_code,
            position=position,
            click=impressions["click"].fill_null(0).to_numpy().astype(np.float64),
            grade=grade,
        )


def scores_in_row_order(
    request_id: pa.Array | pa.ChunkedArray | np.ndarray,
    item_id: pa.Array | pa.ChunkedArray | np.ndarray,
    scores: pa.Table,
    source: str = "scores",
    column: str = "score",
    what: str = "logged candidates",
) -> np.ndarray:
    """``scores[column]`` of each (``request_id``, ``item_id``) row, in row order. ``scores``
    holds request_id, item_id and ``column``; ``source`` names it and ``what`` the rows in the
    error raised when a column is missing, a pair is scored twice, or some row has no score (or
    a NaN one)."""
    missing = [c for c in ("request_id", "item_id", column) if c not in scores.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
    keys = pa.table(
        {"request_id": request_id, "item_id": item_id, "row": np.arange(len(request_id))}
    )
    joined = keys.join(scores.select(["request_id", "item_id", column]),
                       ["request_id", "item_id"], join_type="left outer")  # fmt: skip
    if joined.num_rows != keys.num_rows:
        raise ValueError(f"{source}: a (request_id, item_id) pair is scored more than once")
    score = joined.sort_by("row")[column].to_numpy(zero_copy_only=False).astype(np.float64)
    absent = int(np.isnan(score).sum())
    if absent:
        raise ValueError(
            f"{source}: {absent:,} of the {score.size:,} {what} have no score (or a NaN one); "
            "score every one of them (evaluate the run on this log and split)"
        )
    return score


def sum_above(request: np.ndarray, position: np.ndarray, value: np.ndarray) -> np.ndarray:
    """For each row, the sum of ``value`` over the rows of the same request shown at a smaller
    position (position 0: unexposed, counts nothing and gets the sum over every shown row)."""
    shown = position > 0
    order = np.lexsort((np.where(shown, position, np.iinfo(np.int64).max), request))
    ordered = np.where(shown, value, 0.0)[order]
    before = np.cumsum(ordered) - ordered
    first = np.r_[True, request[order][1:] != request[order][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    out = np.empty(order.size)
    out[order] = before - before[start]
    return out


def _require(table: pa.Table, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")


def _query_codes(impressions: pa.Table, requests: pa.Table) -> np.ndarray:
    """Each impression row's query as an integer code."""
    query = pc.dictionary_encode(requests["query"]).combine_chunks()
    coded = pa.table({"request_id": requests["request_id"], "query": query.indices})
    rows = pa.table(
        {"request_id": impressions["request_id"], "row": np.arange(impressions.num_rows)}
    )
    joined = rows.join(coded, "request_id", join_type="left outer").sort_by("row")
    missing = joined["query"].null_count
    if missing:
        raise ValueError(f"impressions: {missing} rows have a request_id missing from requests")
    return joined["query"].to_numpy().astype(np.int64)
