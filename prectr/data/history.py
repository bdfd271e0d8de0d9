"""Leak-free histories: what a user, and the crowd under a query, did strictly before a request.

One primitive, :func:`last_before`, finds for each request the last ``length`` events that share
its key (a user, a query, a query category) and happened strictly before it; an event at the
same instant as the request is not history. Every history is built from it:

* ``user_requests``: the user's last requests (their query, and through them what was clicked);
* ``user_clicks``: the user's last clicked impressions (the sequence DIN-style attention reads);
* ``query_crowd``: the last exposed impressions of *all* users under the same query (PRECTR-V2's
  cross-user preference mining);
* ``category_crowd``: the same under the same query category.

Histories are arrays of row indices into the ``requests`` or ``impressions`` table, oldest
first, newest last, ``-1`` where there is nothing. They read observed columns only (``click``,
``relevance``), never the evaluation-only ``true_relevance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.fill_null(-1).to_numpy().astype(np.int64)


def last_before(
    event_key: np.ndarray,
    event_time: np.ndarray,
    query_key: np.ndarray,
    query_time: np.ndarray,
    length: int,
) -> np.ndarray:
    """For each query, the indices of the last ``length`` events with the same key and an
    earlier time (strictly), oldest first, -1 padded on the left. Keys below 0 match nothing.

    Vectorised: events are sorted once by (key, time); each query's history is the run of
    sorted events that ends just before (key, time) and starts no earlier than its key's block.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    all_times = np.concatenate([event_time, query_time])
    time_rank = np.unique(all_times, return_inverse=True)[1].ravel().astype(np.int64)
    width = int(time_rank.max(initial=0)) + 1
    e_rank, q_rank = time_rank[: event_time.size], time_rank[event_time.size :]
    e_key = np.where(event_key >= 0, event_key, -1).astype(np.int64)
    composite = (e_key + 1) * width + e_rank  # key -1 sorts first and is never asked for
    order = np.argsort(composite, kind="stable")
    sorted_composite = composite[order]
    q_key = query_key.astype(np.int64)
    block_start = np.searchsorted(sorted_composite, (q_key + 1) * width, side="left")
    end = np.searchsorted(sorted_composite, (q_key + 1) * width + q_rank, side="left")
    positions = end[:, None] - length + np.arange(length)
    valid = (positions >= block_start[:, None]) & (q_key[:, None] >= 0)
    out = np.full(positions.shape, -1, dtype=np.int64)
    out[valid] = order[positions[valid]]
    return out


@dataclass
class Histories:
    user_requests: np.ndarray  # (n_requests, user_length) rows of requests
    user_clicks: np.ndarray  # (n_requests, click_length) rows of impressions
    query_crowd: np.ndarray  # (n_requests, crowd_length) rows of impressions
    category_crowd: np.ndarray | None  # as query_crowd; None without query_category


def build_histories(
    requests: pa.Table,
    impressions: pa.Table,
    user_length: int = 20,
    click_length: int = 50,
    crowd_length: int = 50,
) -> Histories:
    """All histories of every request of a log (tables in the search-log schema)."""
    request_time = pc.cast(requests["timestamp"], pa.timestamp("ms")).cast(pa.int64()).to_numpy()
    found = pc.index_in(impressions["request_id"], value_set=requests["request_id"])
    if found.null_count:
        raise ValueError(f"{found.null_count} impressions name requests not in the requests table")
    request_row = found.to_numpy(zero_copy_only=False).astype(np.int64)
    event_time = request_time[request_row]
    exposed = impressions["click"].is_valid().to_numpy(zero_copy_only=False)
    clicked = exposed & (impressions["click"].fill_null(0).to_numpy() == 1)

    user = _codes(pa.concat_arrays([
        requests["user_id"].combine_chunks(),
        requests["user_id"].combine_chunks().take(pa.array(request_row)),
    ]))  # fmt: skip
    user_of_request, user_of_event = user[: requests.num_rows], user[requests.num_rows :]
    query = _codes(requests["query"])

    def crowd(key_of_request: np.ndarray) -> np.ndarray:
        key = np.where(exposed, key_of_request[request_row], -1)
        return last_before(key, event_time, key_of_request, request_time, crowd_length)

    category = (
        crowd(_codes(requests["query_category"]))
        if "query_category" in requests.column_names
        else None
    )
    return Histories(
        user_requests=last_before(
            user_of_request, request_time, user_of_request, request_time, user_length
        ),
        user_clicks=last_before(
            np.where(clicked, user_of_event, -1),
            event_time,
            user_of_request,
            request_time,
            click_length,
        ),
        query_crowd=crowd(query),
        category_crowd=category,
    )
