"""Evaluating a trained run on its own test split: every metric pooled, per test day, by slice,
on the broad set, and the online proxy with a bootstrap CI.

Any log in the schema can be evaluated; what can be measured depends on its truth
(:mod:`prectr.evaluation.truth`): a plain log gives click metrics, calibration, slices and
relevance metrics on its human-graded candidates; a simulated world adds true grades on every
candidate, the online proxy (replay) and the broad set. ``evaluation.json`` says which truth it
read (``truth``) and what it left out and why (``skipped``).

The test requests are the run's (``time_split`` with the run's ``data.valid_days`` and
``data.test_days``), not the world's: a run configured with three test days is scored on all
three. Writes ``RUN/evaluation.json``, ``RUN/scores.parquet`` (request_id, item_id, score, the
click probability at the logged position ``shown``, and grade probabilities ``grade_0..3`` and
per-grade click probabilities ``click_at_grade_0..3`` if the model has them, one row per pool
candidate) and, when the world keeps
a broad-set sample, ``RUN/broad_scores.parquet`` (request_id, item_id, score): the per-row scores
`prectr compare` bootstraps.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prectr.data.dataset import Collator
from prectr.data.schema import SearchLog, read_log
from prectr.data.shards import write_impressions
from prectr.data.stream import BatchStream
from prectr.evaluation.band import after_click_points, fit_grid, offpolicy_band
from prectr.evaluation.broad import with_broad_candidates
from prectr.evaluation.context import ALL, EvaluationContext
from prectr.evaluation.offpolicy import offpolicy_clicks
from prectr.evaluation.propensity import RESAMPLES as PROPENSITY_REFITS
from prectr.evaluation.propensity import check_click_model
from prectr.evaluation.scoring import CALIBRATION_BINS, calibration_bins
from prectr.evaluation.slices import slice_counts
from prectr.evaluation.statistics import values
from prectr.evaluation.truth import open_truth
from prectr.io import atomic_file
from prectr.metrics import expected_calibration_error
from prectr.metrics.paired import (
    RESAMPLES,
    PairedDifference,
    bootstrap,
    interval,
    mean_statistic,
)

if TYPE_CHECKING:
    from prectr.train.run import TrainedRun

TOP_K = 10  # the off-policy estimate's top k (at most the log's deepest shown position)


def offpolicy_model(after_click: float | Sequence[float], top_examination: float) -> str:
    """What the off-policy estimate assumes about clicks, in words: one ``after_click``, or a
    grid of them (a band)."""
    if not isinstance(after_click, numbers.Real):
        grid = after_click_points(after_click)
        return (
            f"band over the dependent click model's lambda in [{grid[0]:g}, {grid[-1]:g}] "
            f"({len(grid)} points): at each, after a click the user goes on lambda times as "
            f"often (1: position-based), position 1 is examined with probability "
            f"{top_examination:g}; the band runs from the lowest 95% CI lower end to the highest "
            "upper end, and covers the clicks wherever the true lambda is a grid point and the "
            "estimate there covers (docs/offpolicy.md)"
        )
    if after_click == 1.0:
        return (
            "position-based: examination by position times attraction; validated against a "
            "world's replay on reorderings of the shown candidates under the position-based "
            "click model (docs/offpolicy.md)"
        )
    return (
        f"dependent click model (assumed, not estimated from the log): after a click the user "
        f"goes on {after_click:g} times as often, position 1 is examined with probability "
        f"{top_examination:g}; validated against a world's replay on reorderings of the shown "
        "candidates given the world's own values (docs/offpolicy.md)"
    )


SCORES = "scores.parquet"
SHOWN = "shown"  # the scores' column of the click probability at the logged position
BROAD_SCORES = "broad_scores.parquet"
EVALUATION = "evaluation.json"


def score_run(
    run: TrainedRun, log: SearchLog, test_rows: np.ndarray, broad: pa.Table | None
) -> pa.Table:
    """Scores of every candidate of the requests ``test_rows`` (rows of ``log.requests``) by a
    trained run: the logged pool and, given a broad-set sample, its pairs outside the pool.
    ``score`` is the served score (:meth:`RankingModel.score`), ``shown`` the probability at
    the logged position (an unexposed candidate's is meaningless and never read); where the
    model has them, ``grade_0..3`` its grade distribution and ``click_at_grade_0..3`` its
    per-grade click probabilities (:func:`prectr.train.predict.predict`)."""
    from prectr.train.predict import predict

    if broad is not None:
        log = with_broad_candidates(log, broad)
    encoded = run.encoder.encode(log)
    rows = encoded.impressions["request_row"].to_numpy()
    test = encoded.impressions.filter(pa.array(np.isin(rows, test_rows)))
    path = write_impressions(test, run.path / "data" / "evaluation.parquet")
    stream = BatchStream(path, Collator(encoded), run.config.data.batch_size, shuffle=False,
                         rows="all")  # fmt: skip
    p = predict(run.model, stream.epoch())
    scored = {
        "request_id": log.requests["request_id"].take(pa.array(p["request"])),
        "item_id": log.items["item_id"].take(pa.array(p["item"])),
        "score": p["score"].astype(np.float64),
        SHOWN: p["shown"].astype(np.float64),
    }
    # grade probabilities in float64 as before; the heads in the model's float32 (2.1M rows
    # a run on bench: 4 float64 columns would add 60% to the file)
    for key, column, dtype in (("grades", "grade", np.float64),
                               ("click_at_grade", "click_at_grade", np.float32)):  # fmt: skip
        if key in p:
            by_grade = p[key].astype(dtype)
            scored.update({f"{column}_{g}": by_grade[:, g] for g in range(by_grade.shape[1])})
    return pa.table(scored)


def online(
    context: EvaluationContext,
    clicks: np.ndarray,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float | int]:
    """Expected clicks per request of the model (``clicks``, per evaluated request) and of the
    logging ranker on the same requests, the lift, and the difference, each with the 95% CI of a
    bootstrap over requests (paired: model and logging ranker on the same resamples)."""
    logging = context.expected_clicks(context.logging_score)
    every = np.arange(context.rows.n_requests)
    drawn = bootstrap(
        {"model": mean_statistic(clicks, every), "logging": mean_statistic(logging, every)},
        context.rows.n_requests, n_resamples, seed,
    )  # fmt: skip
    model, base = drawn["model"], drawn["logging"]
    difference = PairedDifference(base.value, model.value, model.draws - base.draws).summary()
    lift_lo, lift_hi = interval(model.draws / base.draws - 1.0)
    lo, hi = interval(model.draws)
    return {
        "expected_clicks": model.value,
        "expected_clicks_lo": lo,
        "expected_clicks_hi": hi,
        "logging_expected_clicks": base.value,
        "lift": model.value / base.value - 1.0,
        "lift_lo": lift_lo,
        "lift_hi": lift_hi,
        "difference": difference["diff"],
        "difference_lo": difference["lo"],
        "difference_hi": difference["hi"],
        "requests": context.rows.n_requests,
    }


def offpolicy(
    context: EvaluationContext,
    scores: pa.Table,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
    after_click: float | Sequence[float] = 1.0,
    top_examination: float = 1.0,
) -> tuple[dict | None, str | None]:
    """The off-policy estimate of the clicks per request the model's ranking (``scores``:
    request_id, item_id, score of every evaluated candidate) would get on the log's evaluated
    requests (:mod:`prectr.evaluation.offpolicy`: IPS and doubly robust, with examination
    harvested from the training days; clicks position-based, or with ``after_click < 1`` the
    dependent click model; a sequence ``after_click`` is a grid of it, and the estimate a band:
    :mod:`prectr.evaluation.band`), or None and the reason it cannot be made."""
    log = context.truth.log
    requests = log.requests
    impressions = log.impressions

    def of(rows: np.ndarray) -> pa.Table:
        ids = requests["request_id"].take(pa.array(rows))
        return impressions.filter(pc.is_in(impressions["request_id"], ids))

    train = of(context.train_rows)
    shown = pc.max(train["position"]).as_py()
    if not shown:
        return None, "the training days show no candidate (no position to harvest)"
    single = isinstance(after_click, numbers.Real)
    try:
        # AllPairs refitted on resamples of the training requests (at most one per resample)
        refits = min(PROPENSITY_REFITS, n_resamples)
        fits = fit_grid(train, requests, after_click_points(after_click), top_examination,
                        min(TOP_K, shown), refits, seed)  # fmt: skip
    except ValueError as err:
        return None, f"examination by position cannot be harvested from the log: {err}"
    test = of(context.test_rows)
    model = {"top_examination": top_examination,
             "model": offpolicy_model(after_click, top_examination)}  # fmt: skip
    if not single:
        band = offpolicy_band(test, requests, scores, fits, n_resamples, seed)
        return band.to_dict() | model, None
    propensities, prior = fits[0]
    found = offpolicy_clicks(test, requests, scores, propensities, prior, n_resamples, seed)
    return found.to_dict() | {"examination": propensities.examination.tolist(),
                              "after_click": after_click} | model, None  # fmt: skip


def _counts(context: EvaluationContext, requests: np.ndarray) -> dict[str, int]:
    rows = requests[context.rows.request]
    return {
        "test_requests": int(requests.sum()),
        "test_exposed": int((rows & context.rows.exposed).sum()),
    }


def _ece(context: EvaluationContext, shown: np.ndarray, requests: np.ndarray) -> dict:
    """ECE of the exposed rows of ``requests`` (a mask of evaluated requests)."""
    rows = context.rows
    keep = requests[rows.request] & rows.exposed
    if not keep.any():
        return {}
    return {"ece": expected_calibration_error(rows.click[keep], shown[keep], CALIBRATION_BINS)}


def evaluation_result(
    context: EvaluationContext,
    score: np.ndarray,
    broad_score: np.ndarray | None,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
    shown: np.ndarray | None = None,
) -> dict:
    """Every metric of one model's scores of the context's candidates (and broad sample):
    ``metrics`` (pooled), ``per_day``, ``slices``, ``broad`` and ``online`` (where the truth
    has them), ``calibration_bins``, ``truth`` and ``skipped`` (what could not be measured,
    and why). ``shown``: the click probability of
    each candidate at its logged position, which logloss, calibration, ECE and the bins read
    (default ``score``)."""
    rows, n = context.rows, context.rows.n_requests
    shown = score if shown is None else shown
    clicks = context.expected_clicks(score)
    sections = context.statistics(score, clicks, broad_score, probability=shown)
    counts = slice_counts(context.slices, rows)
    every = np.ones(n, bool)
    result = {
        "metrics": values(sections[ALL], n) | _ece(context, shown, every) | _counts(context, every),
        "per_day": {
            day: values(sections[f"day:{day}"], n)
            | _ece(context, shown, mask)
            | _counts(context, mask)
            for day, mask in context.days.items()
        },
        "slices": {name: values(sections[name], n) | counts[name] for name in counts},
        "calibration_bins": calibration_bins(
            rows.click[rows.exposed].astype(np.float64), shown[rows.exposed]
        ),
        "truth": {"source": context.truth.source, "grades": context.truth.grades()},
        "skipped": dict(context.skipped),
        "bootstrap": {"unit": "request", "resamples": n_resamples, "seed": seed},
    }
    if clicks is not None:
        result["online"] = online(context, clicks, n_resamples, seed)
    if "broad" in sections and context.broad is not None:
        broad = context.broad
        result["broad"] = values(sections["broad"], n) | {
            "requests": broad.requests,
            "candidates_per_request": round(broad.table.num_rows / broad.requests, 1),
        }
    return result


def _trained_log(run: Path, log: str | None) -> str:
    """The log a run trained on, from its config; an error naming the flag when unknown."""
    if not log:
        raise ValueError(f"{run}: its config names no data.log: name the log with --log")
    return log


def split_file(name: str, split: str) -> str:
    """The file ``name`` (e.g. ``scores.parquet``) of an evaluation of ``split``: the test
    split's as named, the validation split's with ``_valid`` before the suffix."""
    if split == "test":
        return name
    stem, suffix = name.split(".", 1)
    return f"{stem}_{split}.{suffix}"


def evaluate_run(
    run_dir: str | Path,
    log_dir: str | Path | None = None,
    checkpoint: str = "best",
    n_resamples: int = RESAMPLES,
    seed: int = 0,
    split: str = "test",
    after_click: float | Sequence[float] = 1.0,
    top_examination: float = 1.0,
) -> dict:
    """Score the run's test split (or ``split="valid"``: its validation split) of a log with a
    trained run (default: the log it trained on, its config's ``data.log``); write
    ``evaluation.json``, ``scores.parquet`` and (with a broad-set sample)
    ``broad_scores.parquet`` into the run directory (for the validation split
    ``evaluation_valid.json`` and so on: :func:`split_file`) and return the evaluation. On a
    plain log the off-policy estimate assumes ``after_click`` (:func:`offpolicy`; a sequence:
    a band over that grid, e.g. :func:`~prectr.evaluation.band.after_click_grid`)."""
    from prectr.train.run import load_trained

    for value in after_click_points(after_click):
        check_click_model(value, top_examination)
    run = load_trained(run_dir, checkpoint)
    log_dir = Path(log_dir or _trained_log(run.path, run.config.data.log))
    log = read_log(log_dir)
    truth = open_truth(log, log_dir)
    data = run.config.data
    context = EvaluationContext.build(truth, data.valid_days, data.test_days, split)
    broad = context.broad
    scores = score_run(run, log, context.test_rows, None if broad is None else broad.table)
    score = context.aligned(scores, f"the scores of {run.path}")
    shown = context.aligned(scores, f"the scores of {run.path}", SHOWN)
    broad_score = None if broad is None else broad.aligned(scores, f"the scores of {run.path}")
    result = {
        "model": run.config.model,
        "name": run.config.name or run.path.name,
        "log": str(log_dir),
        "split": split,
        "test_days": list(context.days),
        "checkpoint": checkpoint,
        **evaluation_result(context, score, broad_score, n_resamples, seed, shown),
    }
    if "online" not in result:  # no world to replay in: estimate from the log's own clicks
        found, reason = offpolicy(context, scores.select(["request_id", "item_id", "score"]),
                                  n_resamples, seed, after_click, top_examination)  # fmt: skip
        if found is None:
            result["skipped"]["offpolicy"] = reason
        else:
            result["offpolicy"] = found
    keys = pa.table(
        {"request_id": context.rows.request_ids[context.rows.request],
         "item_id": context.rows.item_id}
    )  # fmt: skip
    pool_scores = scores.join(keys, ["request_id", "item_id"], join_type="left semi")
    order = [("request_id", "ascending"), ("item_id", "ascending")]
    with atomic_file(run.path / split_file(SCORES, split)) as tmp:
        pq.write_table(pool_scores.sort_by(order), tmp)
    broad_path = run.path / split_file(BROAD_SCORES, split)
    if broad is None or broad_score is None:
        broad_path.unlink(missing_ok=True)  # a former evaluation's, now stale
    else:
        with atomic_file(broad_path) as tmp:
            pq.write_table(broad.table.append_column("score", pa.array(broad_score)), tmp)
    with atomic_file(run.path / split_file(EVALUATION, split)) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
