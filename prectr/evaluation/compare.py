"""Comparing two evaluated runs on the same log: the paired difference (B - A) of every metric,
pooled, by slice and on the broad set, with a 95% CI from a bootstrap over requests.

Both runs must have been evaluated (`prectr evaluate`: their ``scores.parquet`` and, where a
world keeps a broad-set sample, ``broad_scores.parquet``) on the same log with the same split;
the metrics are those its truth allows (:mod:`prectr.evaluation.truth`).
All metrics and slices share one set of resamples (:mod:`prectr.metrics.paired`); with the same
log and bootstrap seed, two comparisons share them too, so their draws can be averaged per
resample (benchmarks/quality.py does that over training seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prectr.config import saved_experiment
from prectr.data.schema import read_log
from prectr.evaluation.context import EvaluationContext
from prectr.evaluation.run import BROAD_SCORES, SCORES, SHOWN, split_file
from prectr.evaluation.truth import LOG_COLUMNS, open_truth
from prectr.io import atomic_file
from prectr.metrics.paired import CONFIDENCE, RESAMPLES, Statistic, paired_bootstrap


def _run_config(run: Path) -> tuple[str, int, int]:
    """The run's display name and its split (valid_days, test_days)."""
    config = saved_experiment(run)
    return config.name or run.name, config.data.valid_days, config.data.test_days


def _scores(path: Path, columns: tuple[str, ...] = ("score",)) -> pa.Table:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `prectr evaluate {path.parent}` first")
    return pq.read_table(path, columns=["request_id", "item_id", *columns])


def _model_statistics(context: EvaluationContext, run: Path, split: str) -> dict[str, Statistic]:
    """Every statistic of one run's scores of ``split``, keyed ``section/metric``."""
    path = run / split_file(SCORES, split)
    scores = _scores(path, ("score", SHOWN))
    score = context.aligned(scores, str(path))
    # logloss and calibration read the probability at each impression's logged position
    shown = context.aligned(scores, str(path), SHOWN)
    broad_score = None
    if context.broad is not None:
        broad = run / split_file(BROAD_SCORES, split)
        broad_score = context.broad.aligned(_scores(broad), str(broad))
    sections = context.statistics(score, context.expected_clicks(score), broad_score,
                                  per_day=False, probability=shown)  # fmt: skip
    return {f"{s}/{m}": stat for s, stats in sections.items() for m, stat in stats.items()}


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    log_dir: str | Path,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
    split: str = "test",
    on_days: Sequence[str] = (),
) -> tuple[dict, dict[str, np.ndarray]]:
    """B - A of every metric of two evaluated runs on the log ``log_dir`` (their test days, or
    with ``split="valid"`` their validation days; with ``on_days``, only those ISO dates of
    the split): a JSON-ready summary
    (``sections``: section -> metric -> a, b, diff, mean, lo, hi, spans_zero) and the draws
    (``section/metric`` -> B - A on each resample)."""
    run_a, run_b = Path(run_a), Path(run_b)
    (name_a, *split_a), (name_b, *split_b) = _run_config(run_a), _run_config(run_b)
    if split_a != split_b:
        raise ValueError(
            f"{run_a} is split (valid_days, test_days) = {tuple(split_a)} and {run_b} "
            f"{tuple(split_b)}: a paired comparison needs both scored on the same requests"
        )
    # only what the split, the slices and the truth need; `prectr evaluate` checked the log
    log = read_log(log_dir, columns=LOG_COLUMNS, validate_log=False)
    context = EvaluationContext.build(open_truth(log, log_dir), *split_a, split, on_days)
    a, b = _model_statistics(context, run_a, split), _model_statistics(context, run_b, split)
    differences = paired_bootstrap(a, b, context.rows.n_requests, n_resamples, seed)
    sections: dict[str, dict] = {}
    for key, difference in differences.items():
        section, metric = key.split("/", 1)
        sections.setdefault(section, {})[metric] = difference.summary()
    summary = {
        "a": name_a,
        "b": name_b,
        "run_a": str(run_a),
        "run_b": str(run_b),
        "log": str(log_dir),
        "split": split,
        "requests": context.rows.n_requests,
        "test_days": list(context.days),
        "bootstrap": {
            "unit": "request",
            "resamples": n_resamples,
            "seed": seed,
            "confidence": CONFIDENCE,
        },
        "sections": sections,
        "skipped": dict(context.skipped),
    }
    return summary, {key: d.draws for key, d in differences.items()}


def write_draws(draws: dict[str, np.ndarray], path: str | Path) -> None:
    """The resampled differences as a parquet table (a column per ``section/metric``, a row
    per resample), atomically."""
    with atomic_file(path) as tmp:
        pq.write_table(pa.table(draws), tmp)
