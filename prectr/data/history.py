"""Leak-free histories: what a user, and the crowd under a query, did strictly before a request.

One primitive, :class:`EventIndex`, sorts events once by (key, time) and then finds, for any
batch of requests, the last ``length`` events that share a request's key (a user, a query, a
query category) and happened strictly before it; an event at the same instant as the request
is not history. :class:`HistoryIndex` holds the four histories of a log:

* ``user_requests``: the user's last requests (their query, and through them what was clicked);
* ``user_clicks``: the user's last clicked impressions (the sequence DIN-style attention reads);
* ``query_crowd``: the last exposed impressions of *all* users under the same query (PRECTR-V2's
  cross-user preference mining);
* ``category_crowd``: the same under the same query category.

Offline, every request of a log asks the index built from that log (:func:`build_histories`);
online, the serving store builds the index once and asks it for each new request, so both see
exactly the same events. Histories are arrays of row indices into the ``requests`` or
``impressions`` table, oldest first, newest last, ``-1`` where there is nothing. They read
observed columns only (``click``, ``relevance``), never the evaluation-only ``true_relevance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.vocabulary import Vocabulary


class EventIndex:
    """Events sorted once by (key, time); keys below 0 are never history."""

    def __init__(self, event_key: np.ndarray, event_time: np.ndarray):
        self.times = np.unique(event_time)
        self.width = self.times.size + 1
        key = np.where(event_key >= 0, event_key, -1).astype(np.int64)
        composite = (key + 1) * self.width + np.searchsorted(self.times, event_time)
        self.order = np.argsort(composite, kind="stable")  # ties keep the events' order
        self.sorted = composite[self.order]

    def last_before(self, query_key: np.ndarray, query_time: np.ndarray, length: int) -> np.ndarray:
        """For each query, the indices of the last ``length`` events with its key and an
        earlier time (strictly), oldest first, -1 padded on the left; a key below 0 matches
        nothing. Two binary searches per query: the key's block, and its events before the
        query's instant (those whose time ranks below the number of event instants before it).
        """
        if length < 1:
            raise ValueError("length must be >= 1")
        q_key = np.asarray(query_key, dtype=np.int64)
        base = (q_key + 1) * self.width
        block_start = np.searchsorted(self.sorted, base, side="left")
        end = np.searchsorted(self.sorted, base + np.searchsorted(self.times, query_time), "left")
        positions = end[:, None] - length + np.arange(length)
        valid = (positions >= block_start[:, None]) & (q_key[:, None] >= 0)
        out = np.full(positions.shape, -1, dtype=np.int64)
        out[valid] = self.order[positions[valid]]
        return out


def last_before(
    event_key: np.ndarray,
    event_time: np.ndarray,
    query_key: np.ndarray,
    query_time: np.ndarray,
    length: int,
) -> np.ndarray:
    """:meth:`EventIndex.last_before` of a one-off index."""
    return EventIndex(event_key, event_time).last_before(query_key, query_time, length)


@dataclass
class Histories:
    user_requests: np.ndarray  # (n_requests, user_length) rows of requests
    user_clicks: np.ndarray  # (n_requests, click_length) rows of impressions
    query_crowd: np.ndarray  # (n_requests, crowd_length) rows of impressions
    category_crowd: np.ndarray | None  # as query_crowd; None without query_category


def _times(timestamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.cast(timestamps, pa.timestamp("ms")).cast(pa.int64()).to_numpy()


class _Keys:
    """Dense codes of the distinct values of a column (a :class:`Vocabulary` of them, whose
    ids start at 2); values never seen, and nulls, get -1."""

    def __init__(self, values: pa.ChunkedArray | pa.Array):
        self.vocabulary = Vocabulary(pc.unique(pc.drop_null(values)).to_pylist())

    def __call__(self, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
        return np.maximum(self.vocabulary.lookup(values).astype(np.int64) - 2, -1)


class HistoryIndex:
    """The events of a log (tables in the search-log schema), indexed for every history."""

    def __init__(self, requests: pa.Table, impressions: pa.Table):
        request_time = _times(requests["timestamp"])
        found = pc.index_in(impressions["request_id"], value_set=requests["request_id"])
        if found.null_count:
            raise ValueError(
                f"{found.null_count} impressions name requests not in the requests table"
            )
        request_row = found.to_numpy(zero_copy_only=False).astype(np.int64)
        event_time = request_time[request_row]
        exposed = impressions["click"].is_valid().to_numpy(zero_copy_only=False)
        clicked = exposed & (impressions["click"].fill_null(0).to_numpy() == 1)
        self.user, self.query = _Keys(requests["user_id"]), _Keys(requests["query"])
        user = self.user(requests["user_id"])
        self.requests = EventIndex(user, request_time)
        self.clicks = EventIndex(np.where(clicked, user[request_row], -1), event_time)
        query = self.query(requests["query"])
        self.query_crowd = EventIndex(np.where(exposed, query[request_row], -1), event_time)
        self.category: _Keys | None = None
        if "query_category" in requests.column_names:
            self.category = _Keys(requests["query_category"])
            category = self.category(requests["query_category"])
            self.category_crowd = EventIndex(
                np.where(exposed, category[request_row], -1), event_time
            )

    def histories(
        self,
        requests: pa.Table,
        user_length: int = 20,
        click_length: int = 50,
        crowd_length: int = 50,
    ) -> Histories:
        """The histories of ``requests`` (user_id, query, timestamp, optional query_category),
        which need not be in the indexed log: an unseen user or query has none."""
        time = _times(requests["timestamp"])
        user = self.user(requests["user_id"])
        category = None
        if self.category is not None and "query_category" in requests.column_names:
            key = self.category(requests["query_category"])
            category = self.category_crowd.last_before(key, time, crowd_length)
        return Histories(
            user_requests=self.requests.last_before(user, time, user_length),
            user_clicks=self.clicks.last_before(user, time, click_length),
            query_crowd=self.query_crowd.last_before(
                self.query(requests["query"]), time, crowd_length
            ),
            category_crowd=category,
        )


def build_histories(
    requests: pa.Table,
    impressions: pa.Table,
    user_length: int = 20,
    click_length: int = 50,
    crowd_length: int = 50,
) -> Histories:
    """All histories of every request of a log (tables in the search-log schema)."""
    index = HistoryIndex(requests, impressions)
    return index.histories(requests, user_length, click_length, crowd_length)
