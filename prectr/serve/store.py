"""The history store: what each user, and the crowd under each query, did before a request.

Built from a log in the search-log schema (the one the run trained on, then newer parts as
they land): its impressions are described once with the run's encoder (item, category, query,
match level, click) and indexed by :class:`~prectr.data.history.HistoryIndex`, the same index
offline training reads, so a request scored online sees exactly the history it would offline.
Lookups are binary searches; ``extend`` adds a newer log part and re-indexes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.features import FeatureEncoder
from prectr.data.history import HistoryIndex
from prectr.data.schema import SearchLog


class HistoryStore:
    def __init__(self, encoder: FeatureEncoder, log: SearchLog):
        self.encoder = encoder
        self.items, self.requests, self.impressions = log.items, log.requests, log.impressions
        self._index()

    def _index(self) -> None:
        log = SearchLog(self.items, self.requests, self.impressions)
        *_, self.events = self.encoder.encode_pairs(log)
        self.index = HistoryIndex(self.requests, self.impressions)

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
