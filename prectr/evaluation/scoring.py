"""Scoring one ranking of evaluation requests with the exact metrics of :mod:`prectr.metrics`.

* Click metrics on the exposed impressions: AUC, user- and request-GAUC (impression-weighted,
  one-class groups skipped), and, for scores that are probabilities, logloss, calibration
  (mean predicted / observed CTR) and ECE (10 equal-mass bins).
* Relevance metrics on the full candidate pool, exposed or not: NDCG@10 on true grades (gains
  2^y - 1), mean true grade and share of irrelevant items in the top 10.
* Online proxy: the world replays the ranking (new top k, same click model) and reports expected
  clicks per request.

`prectr score` scores the reference rankers with these; a trained run's evaluation
(:mod:`prectr.evaluation.run`) computes the same metrics through
:mod:`prectr.evaluation.statistics`, which also bootstraps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.metrics import (
    auc,
    calibration,
    expected_calibration_error,
    gauc,
    irrelevant_share_at_k,
    logloss,
    mean_grade_at_k,
    ndcg_at_k,
    reliability_bins,
)

TOP_K = 10
CALIBRATION_BINS = 10
POOL_COLUMNS = ["request_id", "item_id", "position", "click", "true_relevance", "logging_score"]

if TYPE_CHECKING:
    from prectr.data.simulate import World


def evaluation_pool(world: World, request_ids: pa.Array | None = None) -> pa.Table:
    """Every candidate of the given requests (default: the world's test days), with their
    user, sorted by request."""
    requests = world.requests(days=world.split["test"] if request_ids is None else None)
    if request_ids is not None:
        requests = requests.filter(pc.is_in(requests["request_id"], request_ids))
    requests = requests.select(["request_id", "user_id"])
    pool = world.impressions(requests["request_id"].combine_chunks(), POOL_COLUMNS)
    return pool.join(requests, keys="request_id").sort_by([("request_id", "ascending")])


def train_impressions(world: World) -> pa.Table:
    """Item and click of every impression on the world's training days (reference rankers)."""
    requests = world.requests(days=world.split["train"])
    return world.impressions(requests["request_id"].combine_chunks(), ["item_id", "click"])


def click_metrics(
    click: np.ndarray, score: np.ndarray, user: np.ndarray, request: np.ndarray,
    probability: bool = True,
) -> dict[str, float | None]:  # fmt: skip
    """Click metrics of exposed rows (``click`` 0/1)."""
    if click.size == 0:
        return {}
    return {
        "auc": auc(click, score),
        "gauc_user": gauc(click, score, user),
        "gauc_request": gauc(click, score, request),
        "logloss": logloss(click, score) if probability else None,
        "calibration": calibration(click, score) if probability else None,
        "ece": expected_calibration_error(click, score) if probability else None,
    }


def relevance_metrics(grade: np.ndarray, score: np.ndarray, request: np.ndarray) -> dict:
    """Relevance metrics of pool rows on their true grades (top 10 per request)."""
    if grade.size == 0:
        return {}
    return {
        "ndcg@10": ndcg_at_k(grade, score, request, k=TOP_K),
        "mean_grade@10": mean_grade_at_k(grade, score, request, k=TOP_K),
        "irrelevant@10": irrelevant_share_at_k(grade, score, request, k=TOP_K),
    }


def _exposed_click_metrics(pool: pa.Table, scores: np.ndarray, probability: bool) -> dict:
    exposed = pool["click"].is_valid().to_numpy(zero_copy_only=False)
    return click_metrics(
        pool["click"].to_numpy(zero_copy_only=False)[exposed].astype(np.int64),
        scores[exposed],
        pool["user_id"].to_numpy()[exposed],
        pool["request_id"].to_numpy()[exposed],
        probability,
    )


def _replay(world: World, pool: pa.Table, scores: np.ndarray) -> float:
    keys = pool.select(["request_id", "item_id"])
    return world.replay(keys.append_column("score", pa.array(scores))).expected_clicks


def evaluate_scores(world: World, pool: pa.Table, scores: np.ndarray, probability: bool) -> dict:
    """All metrics of ``scores`` (one per row of ``pool``, from :func:`evaluation_pool`)."""
    request = pool["request_id"].to_numpy()
    return {
        **_exposed_click_metrics(pool, scores, probability),
        **relevance_metrics(pool["true_relevance"].to_numpy(), scores, request),
        "expected_clicks": _replay(world, pool, scores),
        "test_requests": int(np.unique(request).size),
        "test_exposed": int(pool["click"].is_valid().to_numpy(zero_copy_only=False).sum()),
    }


def calibration_bins(click: np.ndarray, score: np.ndarray, n: int = CALIBRATION_BINS) -> list[dict]:
    """The reliability diagram's equal-mass bins (:func:`prectr.metrics.reliability_bins`)."""
    return [
        {"mean_predicted": p, "mean_observed": y, "count": rows}
        for p, y, rows in reliability_bins(click, score, n)
    ]
