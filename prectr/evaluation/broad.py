"""The broad retrieved set: how a model ranks what coarse retrieval returns, not only the pool.

A simulated world keeps, for a sample of its evaluation-day requests, a uniform sample of at
least 500 candidates of each request's broad retrieved set (1,000 to 5,000 items, most never
logged): ``World.broad(request_ids)`` gives request_id, item_id and true_relevance. A trained
run scores those pairs like any candidate (:func:`with_broad_candidates`), and the metrics are
the coarse stage's: irrelevant@10, NDCG@10 on true grades, recall@100 of the exact items and
expected clicks when the world replays the model's top k of the sample
(``World.replay(scores, candidates="broad")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.schema import SearchLog
from prectr.evaluation.logged import scores_in_row_order
from prectr.evaluation.statistics import broad_statistics
from prectr.metrics.paired import Statistic

if TYPE_CHECKING:
    from prectr.data.simulate import World

BROAD_COLUMNS = ["request_id", "item_id", "true_relevance"]


def broad_sample(world: World, request_ids: pa.Array) -> tuple[pa.Table | None, str | None]:
    """The world's broad-set sample of ``request_ids``, or None and the reason there is none."""
    sample = world.broad(request_ids)
    if sample.num_rows == 0:
        return None, f"{world.root} kept no broad-set sample of the evaluated requests"
    return sample.select(BROAD_COLUMNS), None


def with_broad_candidates(log: SearchLog, broad: pa.Table) -> SearchLog:
    """``log`` with the broad sample's pairs that are not in its impressions appended as
    unexposed candidates (position, click, relevance and relevance_source null).

    No logged row's features change: histories are built from exposed events only (the
    HistoryIndex's clicks and crowds keep rows whose click is set; a user's earlier requests
    come from the requests table), the appended rows are never exposed, and they come after
    every logged row, so the row indices that histories hold stay valid.
    """
    keys = ["request_id", "item_id"]
    extra = broad.select(keys).join(log.impressions.select(keys), keys, join_type="left anti")
    schema = log.impressions.schema
    columns = {
        f.name: extra[f.name].cast(f.type) if f.name in keys else pa.nulls(extra.num_rows, f.type)
        for f in schema
    }
    appended = pa.concat_tables([log.impressions, pa.table(columns, schema=schema)])
    return SearchLog(log.items, log.requests, appended, log.sources)


@dataclass(frozen=True)
class BroadRows:
    """The broad sample of the evaluated requests, sorted by (request_id, item_id);
    ``request`` indexes the evaluated requests (the bootstrap's weights)."""

    table: pa.Table
    request: np.ndarray
    grade: np.ndarray

    @classmethod
    def from_sample(cls, sample: pa.Table, request_ids: np.ndarray) -> BroadRows:
        sample = sample.filter(pc.is_in(sample["request_id"], pa.array(request_ids)))
        sample = sample.sort_by([("request_id", "ascending"), ("item_id", "ascending")])
        request = np.searchsorted(request_ids, sample["request_id"].to_numpy())
        grade = sample["true_relevance"].to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(sample.select(["request_id", "item_id"]), request, grade)

    @property
    def requests(self) -> int:
        return int(np.unique(self.request).size)

    def aligned(self, scores: pa.Table, source: str) -> np.ndarray:
        """Scores (request_id, item_id, score) of every sampled pair, in row order; ``source``
        names the scores in the error when some pair has none."""
        return scores_in_row_order(self.table["request_id"], self.table["item_id"], scores,
                                   source, what="pairs of the broad-set sample")  # fmt: skip

    def scored(self, score: np.ndarray) -> pa.Table:
        """The sampled pairs with ``score`` (one per row): what a truth replays."""
        return self.table.append_column("score", pa.array(score))

    def statistics(self, score: np.ndarray, clicks: np.ndarray | None) -> dict[str, Statistic]:
        """The broad-set metrics of ``score`` (one per row); ``clicks``: expected clicks of
        each request when a truth replays the model's top k of its sample (:meth:`scored`),
        None where the truth cannot."""
        return broad_statistics(self.request, self.grade, score, clicks)
