"""Scoring rankings of a world's test day: click, relevance and online-proxy metrics, by slice.

* Click metrics on the exposed impressions: AUC, user- and request-GAUC (impression-weighted,
  one-class groups skipped), and, for scores that are probabilities, logloss and calibration.
* Relevance metrics on the full candidate pool, exposed or not: NDCG@10 on true grades (gains
  2^y - 1), mean true grade and share of irrelevant items in the top 10.
* Online proxy: the world replays the ranking (new top k, same click model) and reports expected
  clicks per request, against the logging ranker's on the same requests.
* Slices: cold-start users (at most 2 earlier requests), new items (unseen in training: their
  id is out of the run's vocabulary; click metrics on their exposed rows), and the unexposed
  candidates (relevance metrics over the part of each pool the logging ranker never showed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prectr.data.dataset import BatchStream, Collator, time_split, write_impressions
from prectr.data.features import OOV
from prectr.data.schema import read_log
from prectr.data.simulate import World
from prectr.data.simulate.summary import COLD_START_MAX_EARLIER, earlier_requests
from prectr.io import atomic_file
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
CALIBRATION_BINS = 10
POOL_COLUMNS = ["request_id", "item_id", "position", "click", "true_relevance", "logging_score"]


def evaluation_pool(world: World, request_ids: pa.Array | None = None) -> pa.Table:
    """Every candidate of the given requests (default: the world's test days), with their
    user, sorted by request."""
    requests = world.requests(days=None if request_ids is not None else world.split["test"])
    if request_ids is not None:
        requests = requests.filter(pc.is_in(requests["request_id"], request_ids))
    requests = requests.select(["request_id", "user_id"])
    pool = world.impressions(requests["request_id"].combine_chunks(), POOL_COLUMNS)
    return pool.join(requests, keys="request_id").sort_by([("request_id", "ascending")])


def train_impressions(world: World) -> pa.Table:
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
    }


def relevance_metrics(grade: np.ndarray, score: np.ndarray, request: np.ndarray) -> dict:
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


def cold_start_requests(world: World) -> pa.Array:
    """Request ids whose user made at most COLD_START_MAX_EARLIER requests before them."""
    requests = world.requests().sort_by([("timestamp", "ascending")])
    user = pc.dictionary_encode(requests["user_id"]).combine_chunks().indices.to_numpy()
    cold = earlier_requests(user.astype(np.int64)) <= COLD_START_MAX_EARLIER
    return requests["request_id"].filter(pa.array(cold)).combine_chunks()


def slice_metrics(
    world: World, pool: pa.Table, scores: np.ndarray, probability: bool, new_item: np.ndarray
) -> dict[str, dict]:
    cold = pc.is_in(pool["request_id"], cold_start_requests(world)).to_numpy(zero_copy_only=False)
    cold_pool = pool.filter(pa.array(cold))
    unexposed = ~pool["click"].is_valid().to_numpy(zero_copy_only=False)
    return {
        "cold_start": evaluate_scores(world, cold_pool, scores[cold], probability),
        "new_items": {
            **_exposed_click_metrics(
                pool.filter(pa.array(new_item)), scores[new_item], probability
            ),
            "candidates": int(new_item.sum()),
        },
        "unexposed": relevance_metrics(
            pool["true_relevance"].to_numpy()[unexposed],
            scores[unexposed],
            pool["request_id"].to_numpy()[unexposed],
        ),
    }


def calibration_bins(click: np.ndarray, score: np.ndarray, n: int = CALIBRATION_BINS) -> list[dict]:
    """Equal-count bins of the score: mean predicted against mean observed click rate."""
    order = np.argsort(score, kind="stable")
    return [
        {
            "mean_predicted": float(score[b].mean()),
            "mean_observed": float(click[b].mean()),
            "count": int(b.size),
        }
        for b in np.array_split(order, n)
        if b.size
    ]


def evaluate_run(run_dir: str | Path, world_dir: str | Path, checkpoint: str = "best") -> dict:
    """Score every test-day candidate of a world with a trained run; write ``evaluation.json``
    and ``scores.parquet`` into the run directory and return the evaluation."""
    from prectr.train.run import load_trained
    from prectr.train.trainer import predict

    run = load_trained(run_dir, checkpoint)
    world = World(world_dir)
    log = read_log(world_dir)
    encoded = run.encoder.encode(log)
    test_rows = time_split(log.requests, run.config.data.valid_days, run.config.data.test_days)
    rows = encoded.impressions["request_row"].to_numpy()
    test = encoded.impressions.filter(pa.array(np.isin(rows, test_rows["test"])))
    path = write_impressions(test, run.path / "data" / "evaluation.parquet")
    stream = BatchStream(path, Collator(encoded), run.config.data.batch_size, shuffle=False,
                         rows="all")  # fmt: skip
    p = predict(run.model, stream.epoch())
    scored = {
        "request_id": log.requests["request_id"].take(pa.array(p["request"])),
        "item_id": log.items["item_id"].take(pa.array(p["item"])),
        "score": p["score"].astype(np.float64),
        "new_item": encoded.item["item_id"][p["item"]] == OOV,
    }
    if "grades" in p:
        scored.update({f"grade_{g}": p["grades"][:, g].astype(np.float64) for g in range(4)})
    scores = pa.table(scored)
    test_ids = log.requests["request_id"].take(pa.array(test_rows["test"])).combine_chunks()
    pool = evaluation_pool(world, test_ids).join(scores, ["request_id", "item_id"])
    pool = pool.sort_by([("request_id", "ascending"), ("item_id", "ascending")])
    s = pool["score"].to_numpy()
    metrics = evaluate_scores(world, pool, s, probability=True)
    logging = _replay(world, pool, pool["logging_score"].to_numpy())
    exposed = pool["click"].is_valid().to_numpy(zero_copy_only=False)
    result = {
        "model": run.config.model,
        "name": run.config.name or run.path.name,
        "world": str(world_dir),
        "split": "test",
        "checkpoint": checkpoint,
        "metrics": metrics,
        "slices": slice_metrics(world, pool, s, True, pool["new_item"].to_numpy()),
        "online": {
            "expected_clicks": metrics["expected_clicks"],
            "logging_expected_clicks": logging,
            "lift": metrics["expected_clicks"] / logging - 1.0,
        },
        "calibration_bins": calibration_bins(
            pool["click"].to_numpy(zero_copy_only=False)[exposed].astype(np.float64), s[exposed]
        ),
    }
    with atomic_file(run.path / "scores.parquet") as tmp:
        pq.write_table(scores.drop_columns(["new_item"]), tmp)
    with atomic_file(run.path / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
