"""Scoring a ranking of a world's test requests: click, relevance and online-proxy metrics.

* Click metrics on the exposed impressions: AUC, user- and request-GAUC (impression-weighted,
  one-class groups skipped), and, for scores that are probabilities, logloss and calibration.
* Relevance metrics on the full candidate pool, exposed or not: NDCG@10 on true grades (gains
  2^y - 1), mean true grade and share of irrelevant items in the top 10.
* Online proxy: the world replays the ranking (new top k, same click model) and reports expected
  clicks per request.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from prectr.data.simulate import World
from prectr.metrics import (
    auc,
    calibration,
    gauc,
    irrelevant_share_at_k,
    logloss,
    mean_grade_at_k,
    ndcg_at_k,
)

TOP_K = 10
POOL_COLUMNS = ["request_id", "item_id", "position", "click", "true_relevance", "logging_score"]


def evaluation_pool(world: World) -> pa.Table:
    """Every candidate of the test day's requests, with their user."""
    requests = world.requests(days=world.split["test"]).select(["request_id", "user_id"])
    pool = world.impressions(requests["request_id"].combine_chunks(), POOL_COLUMNS)
    return pool.join(requests, keys="request_id").sort_by([("request_id", "ascending")])


def train_impressions(world: World) -> pa.Table:
    requests = world.requests(days=world.split["train"])
    return world.impressions(requests["request_id"].combine_chunks(), ["item_id", "click"])


def evaluate_scores(world: World, pool: pa.Table, scores: np.ndarray, probability: bool) -> dict:
    """All metrics of ``scores`` (one per row of ``pool``, from :func:`evaluation_pool`)."""
    exposed = pool["click"].is_valid().to_numpy(zero_copy_only=False)
    click = pool["click"].to_numpy(zero_copy_only=False)[exposed].astype(np.int64)
    s = scores[exposed]
    request = pool["request_id"].to_numpy()
    grade = pool["true_relevance"].to_numpy()
    replay = world.replay(
        pa.table({"request_id": request, "item_id": pool["item_id"].to_numpy(), "score": scores})
    )
    return {
        "auc": auc(click, s),
        "gauc_user": gauc(click, s, pool["user_id"].to_numpy()[exposed]),
        "gauc_request": gauc(click, s, request[exposed]),
        "logloss": logloss(click, s) if probability else None,
        "calibration": calibration(click, s) if probability else None,
        "ndcg@10": ndcg_at_k(grade, scores, request, k=TOP_K),
        "mean_grade@10": mean_grade_at_k(grade, scores, request, k=TOP_K),
        "irrelevant@10": irrelevant_share_at_k(grade, scores, request, k=TOP_K),
        "expected_clicks": replay.expected_clicks,
        "test_requests": int(np.unique(request).size),
        "test_exposed": int(exposed.sum()),
    }
