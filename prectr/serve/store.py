"""The history store: what each user, and the crowd under each query, did before a request.

Built from a log in the search-log schema (the one the run trained on, then newer parts as
they land): its impressions are described once with the run's encoder (item, category, query,
match level, click) and indexed by :class:`~prectr.data.history.HistoryIndex`, the same index
offline training reads, so a request scored online sees exactly the history it would offline.
Lookups are binary searches; ``extend`` adds a newer log part and re-indexes.

The query category, where the run's model reads one (its training log had the column), is read
the way training reads it: a log without the column is one whose categories are all null, and
a null category is the unknown one (no candidate matches it, and the crowd backs off from the
query to nothing). For a request that sends none, :meth:`HistoryStore.query_category` gives the
category the log most often gave the same query (normalised as the crowd is keyed) in its last
``QUERY_CATEGORY_VOTES`` requests before the request, ties to the most recent: the engine's
query classifier, as the log saw it answer.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.features import FeatureEncoder
from prectr.data.history import EventIndex, HistoryIndex, _times, normalised_query
from prectr.data.schema import SearchLog

QUERY_CATEGORY_VOTES = 20  # the query's last logged requests whose categories vote


class HistoryStore:
    def __init__(self, encoder: FeatureEncoder, log: SearchLog):
        self.encoder = encoder
        self.items, self.requests, self.impressions = log.items, log.requests, log.impressions
        self._index()

    def _index(self) -> None:
        if self.encoder.has_query_category and "query_category" not in self.requests.column_names:
            nulls = pa.nulls(self.requests.num_rows, pa.string())
            self.requests = self.requests.append_column("query_category", nulls)
        log = SearchLog(self.items, self.requests, self.impressions)
        *_, self.events = self.encoder.encode_pairs(log)
        self.index = HistoryIndex.of_log(self.requests, self.impressions)
        if self.encoder.has_query_category:
            categories = self.requests["query_category"]
            query = self.index.query(normalised_query(self.requests["query"]))
            known = categories.is_valid().to_numpy(zero_copy_only=False)
            self.categories = categories.combine_chunks()
            time = _times(self.requests["timestamp"])
            self.category_votes = EventIndex(np.where(known, query, -1), time)

    def query_category(self, query: str, timestamp: datetime) -> str | None:
        """The category the log most often gave ``query`` in its last
        ``QUERY_CATEGORY_VOTES`` requests strictly before ``timestamp`` (ties: the most recent
        of them); None when it gave none (a new query, or a log without categories).
        ``timestamp``: naive UTC, as the log's."""
        key = self.index.query(normalised_query(pa.array([query], pa.string())))
        time = _times(pa.array([timestamp], pa.timestamp("ms")))
        rows = self.category_votes.last_before(key, time, QUERY_CATEGORY_VOTES)[0]
        votes = self.categories.take(rows[rows >= 0]).to_pylist()
        return max(reversed(votes), key=votes.count) if votes else None

    def extend(self, log: SearchLog) -> None:
        """Add a newer part of the log (its items may repeat known ones)."""
        new_items = log.items.filter(pc.invert(pc.is_in(log.items["item_id"],
                                                        self.items["item_id"])))  # fmt: skip
        self.items = pa.concat_tables([self.items, new_items], promote_options="permissive")
        self.requests = pa.concat_tables([self.requests, log.requests],
                                         promote_options="permissive")  # fmt: skip
        self.impressions = pa.concat_tables([self.impressions, log.impressions],
                                            promote_options="permissive")  # fmt: skip
        self._index()

    def features(self, requests: pa.Table) -> dict[str, np.ndarray]:
        """History features of ``requests`` (user_id, query, timestamp, query_category if the
        log has it): only events strictly before each request's timestamp count."""
        h = self.index.histories(requests, **self.encoder.history_options)
        return self.encoder.encode_histories(h, self.events)
