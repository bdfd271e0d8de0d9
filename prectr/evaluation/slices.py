"""Slices of the evaluated requests and rows, each scored with every metric that applies.

Request slices (every metric on the slice's requests; click metrics on their exposed rows,
relevance metrics on their pools), named ``family:band``:

* ``query``, the query's frequency on the training days. Count each query string's training
  requests and lay the training requests out query by query, from the most frequent query down
  (ties by query text): a query is ``head`` when its requests start within the first third of
  that layout, ``torso`` within the second, ``tail`` within the last; ``unseen`` when it has no
  training request. So head is the few queries that make a third of the traffic, tail the long
  rest.
* ``user``, the user's activity: requests the user made earlier in the whole log (time order,
  ties by request id): ``cold`` at most 2 (the world summary's cold start), ``low`` 3 to 9,
  ``mid`` 10 to 29, ``high`` 30 or more.
* ``exact``, exact-item scarcity of the pool: grade-3 candidates in the request's pool,
  ``none`` 0, ``scarce`` 1 to 3, ``plenty`` 4 or more. Needs every candidate's grade (a world's
  truth, or a log that grades every candidate); skipped with a reason otherwise.

Row slices: ``new_items``, the rows on items with no impression on the training days (click
metrics on their exposed rows), and ``unexposed``, the candidates the logging ranker did not
show (relevance metrics over that part of each pool).

Only the log's requests table (user_id, query, timestamp) and, for ``exact``, every
candidate's grade are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.history import COLD_START_MAX_EARLIER, earlier_requests
from prectr.evaluation.statistics import (
    EvaluationRows,
    click_statistics,
    model_statistics,
    relevance_statistics,
)
from prectr.metrics.paired import Statistic

QUERY_BANDS = ("head", "torso", "tail", "unseen")
ACTIVITY_BANDS = ("cold", "low", "mid", "high")
EXACT_BANDS = ("none", "scarce", "plenty")
#: Upper bounds (inclusive) of earlier requests for cold, low and mid users; high is the rest.
ACTIVITY_MAX_EARLIER = (COLD_START_MAX_EARLIER, 9, 29)
#: Upper bounds (inclusive) of exact candidates in the pool for none and scarce; plenty above.
EXACT_MAX = (0, 3)
FAMILIES = {"query": QUERY_BANDS, "user": ACTIVITY_BANDS, "exact": EXACT_BANDS}
ROW_SLICES = ("new_items", "unexposed")


def query_frequency(
    queries: pa.Array | pa.ChunkedArray, train_queries: pa.Array | pa.ChunkedArray
) -> np.ndarray:
    """The band (index into :data:`QUERY_BANDS`) of each query in ``queries``, from the query
    strings of the training requests ``train_queries`` (one per request)."""
    counts = pc.value_counts(pc.drop_null(train_queries))
    table = pa.table({"query": counts.field("values"), "n": counts.field("counts")})
    table = table.sort_by([("n", "descending"), ("query", "ascending")])
    n = table["n"].to_numpy()
    before = np.cumsum(n) - n
    band = np.minimum(3 * before // max(int(n.sum()), 1), 2)
    found = pc.index_in(queries, value_set=table["query"].combine_chunks())
    index = found.fill_null(-1).to_numpy(zero_copy_only=False)
    return np.where(index >= 0, band[np.maximum(index, 0)], QUERY_BANDS.index("unseen"))


def user_activity(requests: pa.Table) -> np.ndarray:
    """The band (index into :data:`ACTIVITY_BANDS`) of each row of ``requests`` (the whole log:
    request_id, user_id, timestamp) by the user's earlier requests."""
    time = pc.cast(requests["timestamp"], pa.timestamp("ms")).cast(pa.int64()).to_numpy()
    order = np.lexsort((requests["request_id"].to_numpy(), time))
    user = np.unique(requests["user_id"].to_numpy()[order], return_inverse=True)[1].ravel()
    earlier = np.empty(order.size, dtype=np.int64)
    earlier[order] = earlier_requests(user.astype(np.int64))
    return np.searchsorted(np.asarray(ACTIVITY_MAX_EARLIER), earlier, side="left")


def exact_scarcity(rows: EvaluationRows) -> np.ndarray:
    """The band (index into :data:`EXACT_BANDS`) of each evaluated request by the exact
    (grade 3) candidates of its pool."""
    if not rows.graded.all():
        raise ValueError("exact-item scarcity needs every candidate's grade")
    exact = np.bincount(rows.request, weights=rows.grade == 3, minlength=rows.n_requests)
    return np.searchsorted(np.asarray(EXACT_MAX), exact, side="left")


@dataclass
class Slices:
    """Masks of each slice: over evaluated requests (``family:band``) or over rows, and the
    families that could not be formed, with the reason."""

    requests: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def row_mask(self, rows: EvaluationRows, name: str) -> np.ndarray:
        """The rows of slice ``name``."""
        if name in self.rows:
            return self.rows[name]
        return self.requests[name][rows.request]


def evaluation_slices(
    requests: pa.Table, train_rows: np.ndarray, train_items: np.ndarray, rows: EvaluationRows
) -> Slices:
    """Every slice of ``rows``. ``requests``: the whole log's requests table; ``train_rows``:
    its rows on the training days; ``train_items``: item ids with a training impression."""
    found = pc.index_in(pa.array(rows.request_ids), value_set=requests["request_id"])
    if found.null_count:
        raise ValueError(f"{found.null_count} evaluated requests are not in the requests table")
    evaluated = found.to_numpy(zero_copy_only=False).astype(np.int64)
    bands = {
        "query": query_frequency(
            requests["query"].take(pa.array(evaluated)),
            requests["query"].take(pa.array(train_rows)),
        ),
        "user": user_activity(requests)[evaluated],
    }
    slices = Slices()
    graded = int(rows.graded.sum())
    if graded < rows.request.size:
        slices.skipped["exact"] = (
            f"exact-item scarcity needs every candidate's grade; {graded:,} of the "
            f"{rows.request.size:,} evaluated candidates are graded"
        )
    else:
        bands["exact"] = exact_scarcity(rows)
    for family, band in bands.items():
        for i, name in enumerate(FAMILIES[family]):
            slices.requests[f"{family}:{name}"] = band == i
    slices.rows["new_items"] = ~np.isin(rows.item_id, train_items)
    slices.rows["unexposed"] = ~rows.exposed
    return slices


def slice_statistics(
    slices: Slices,
    rows: EvaluationRows,
    score: np.ndarray,
    expected_clicks: np.ndarray | None,
    probability: np.ndarray | None = None,
) -> dict[str, dict[str, Statistic]]:
    """Each slice's statistics of one model's ``score``: every metric on a request slice,
    click metrics on ``new_items``, relevance metrics on ``unexposed``."""
    out = {
        name: model_statistics(rows, score, mask[rows.request], expected_clicks, probability)
        for name, mask in slices.requests.items()
    }
    out["new_items"] = click_statistics(rows, score, slices.rows["new_items"], probability)
    out["unexposed"] = relevance_statistics(rows, score, slices.rows["unexposed"])
    return out


def slice_counts(slices: Slices, rows: EvaluationRows) -> dict[str, dict[str, int]]:
    """Requests, candidates and exposed candidates of each slice."""
    out = {}
    for name in [*slices.requests, *slices.rows]:
        mask = slices.row_mask(rows, name)
        out[name] = {
            "requests": int(rows.requests_of(mask).sum()),
            "candidates": int(mask.sum()),
            "exposed": int((mask & rows.exposed).sum()),
        }
    return out
