"""A generated world on disk, read back: its log, its knobs and its truth, and the replay of a
new ranking in it (the online proxy).

A world directory holds the schema's tables (``items.parquet``, ``requests.parquet``,
``impressions/part-*.parquet``), ``world.json`` (knobs, split days, summary) and ``truth/`` with
the latent state that clicks are drawn from (users' tolerance and taste, items' attributes and
popularity, queries' intents). ``truth/`` and the impressions' ``true_relevance`` and
``logging_score`` columns are for evaluation and replay only: no model or feature may read them.
:func:`prectr.data.simulate.generate.simulate` writes one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from prectr.data.simulate.clicks import ClickModel, attraction, preference_logit
from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.population import taste
from prectr.data.simulate.state import DAY_MS, stream_rng

BROAD_SCHEMA = pa.schema(
    [("request_id", pa.int64()), ("item_id", pa.int64()), ("true_relevance", pa.int8())]
)


@dataclass
class ReplayResult:
    """Per request: expected clicks (closed form) and sampled clicks of the new top k."""

    per_request: pa.Table

    @property
    def expected_clicks(self) -> float:
        return float(pc.mean(self.per_request["expected_clicks"]).as_py())

    @property
    def clicks(self) -> float:
        return float(pc.mean(self.per_request["clicks"]).as_py())


class World:
    """A generated world on disk: its log, its knobs, and the truth to replay rankings in."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "world.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.root}: not a simulated world (no world.json)")
        self.meta = json.loads(meta_path.read_text())
        self.config = WorldConfig(**self.meta["config"])
        self.click_model = ClickModel(
            self.config.click_model, self.config.eta, self.config.dcm_lambda
        )

    @property
    def split(self) -> dict[str, list[int]]:
        return self.meta["split"]

    def requests(self, days: list[int] | None = None) -> pa.Table:
        table = pq.read_table(self.root / "requests.parquet")
        if days is None:
            return table
        return table.filter(pc.is_in(self.day_of(table["timestamp"]), pa.array(days, pa.int64())))

    def day_of(self, timestamp: pa.ChunkedArray) -> pa.ChunkedArray:
        start = datetime.fromisoformat(self.config.start_date).replace(tzinfo=UTC)
        ms = pc.cast(pc.cast(timestamp, pa.timestamp("ms")), pa.int64())
        return pc.divide(pc.subtract(ms, int(start.timestamp() * 1000)), DAY_MS)

    def impressions(self, request_ids: pa.Array | None = None, columns=None) -> pa.Table:
        dataset = ds.dataset(self.root / "impressions", format="parquet")
        filt = None if request_ids is None else pc.field("request_id").isin(request_ids)
        return dataset.to_table(columns=columns, filter=filt)

    def broad(self, request_ids: pa.Array | None = None) -> pa.Table:
        """The kept broad-set samples (request_id, item_id, true_relevance): for
        ``broad_requests`` requests of each validation and test day, ``broad_sample`` candidates
        drawn uniformly from all that retrieval returned (most of them never logged)."""
        dataset = ds.dataset(self.root / "truth" / "broad", format="parquet", schema=BROAD_SCHEMA)
        filt = None if request_ids is None else pc.field("request_id").isin(request_ids)
        return dataset.to_table(filter=filt)

    def taste(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """How much each user likes each item apart from its relevance, as the simulator's click
        model reads it (:func:`prectr.data.simulate.population.taste`), from the world's truth."""
        users, items = self._truth_users, self._truth_items
        return taste(users["style_affinity"], users["price_sensitivity"], user,
                     items["style"][item], items["price_z"][item])  # fmt: skip

    def preference_logit(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The logit of the click model's preference term of each (user, item)
        (:func:`prectr.data.simulate.clicks.preference_logit`)."""
        cfg = self.config
        return preference_logit(self.taste(user, item), self._truth_items["popularity"][item],
                                cfg.taste_weight, cfg.popularity_weight)  # fmt: skip

    @functools.cached_property
    def _truth_users(self) -> dict[str, np.ndarray]:
        """The users' style affinity ``(users, styles)`` and price sensitivity, read once."""
        users = pq.read_table(self.root / "truth" / "users.parquet")
        affinity = users["style_affinity"].combine_chunks().flatten().to_numpy()
        return {
            "style_affinity": affinity.reshape(users.num_rows, -1),
            "price_sensitivity": users["price_sensitivity"].to_numpy(),
        }

    @functools.cached_property
    def _truth_items(self) -> dict[str, np.ndarray]:
        """The items' style, standardised price and popularity, read once."""
        items = pq.read_table(self.root / "truth" / "items.parquet", columns=["style", "price_z",
                              "popularity"])  # fmt: skip
        return {name: items[name].to_numpy() for name in items.column_names}

    def replay(self, scores: pa.Table, seed: int = 0, candidates: str = "pool") -> ReplayResult:
        """Rank each scored request's candidates by ``scores`` (request_id, item_id, score),
        expose the new top k, and draw clicks from the world's click model.

        ``candidates``: ``pool``, the logged pool (impressions), or ``broad``, the kept
        broad-set sample; the scores must cover every candidate of each scored request.
        """
        if candidates not in ("pool", "broad"):
            raise ValueError(f"candidates {candidates!r}: expected pool or broad")
        requests = pc.unique(scores["request_id"])
        pool = (
            self.impressions(requests, ["request_id", "item_id", "true_relevance"])
            if candidates == "pool"
            else self.broad(requests)
        )
        joined = pool.join(scores.select(["request_id", "item_id", "score"]),
                           keys=["request_id", "item_id"], join_type="left outer")  # fmt: skip
        missing = joined["score"].null_count
        if missing:
            raise ValueError(
                f"scores miss {missing} {candidates} candidates of the scored requests"
            )
        truth = pq.read_table(self.root / "truth" / "requests.parquet")
        tolerance = truth["tolerance"].to_numpy()  # indexed by request id (0..n-1)
        request_user = self.requests().select(["request_id", "user_id"])
        joined = joined.join(request_user, keys="request_id")
        req = joined["request_id"].to_numpy()
        order = np.lexsort((-joined["score"].to_numpy(), req))
        req = req[order]
        first = np.r_[True, req[1:] != req[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(req.size) - np.repeat(starts, np.diff(np.r_[starts, req.size]))
        k = self.config.exposed_k
        top = order[rank < k]
        row = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, req.size]))[rank < k]
        col = rank[rank < k]
        user = joined["user_id"].to_numpy()[top]
        item = joined["item_id"].to_numpy()[top]
        grade = joined["true_relevance"].to_numpy()[top]
        cfg = self.config
        a = attraction(
            grade, tolerance[joined["request_id"].to_numpy()[top]], self.taste(user, item),
            self._truth_items["popularity"][item],
            cfg.tolerance_strength, cfg.taste_weight, cfg.popularity_weight,
        )  # fmt: skip
        ranked = np.zeros((starts.size, k))
        ranked[row, col] = a
        expected = self.click_model.expected_clicks(ranked).sum(axis=1)
        sampled = self.click_model.sample(ranked, stream_rng(seed, "replay")).sum(axis=1)
        return ReplayResult(
            pa.table(
                {
                    "request_id": req[starts],
                    "expected_clicks": expected,
                    "clicks": sampled.astype(np.int64),
                }
            )
        )
