"""Pooled AUC split into the order of requests and the order within them, two runs paired.

Run: .venv/bin/python benchmarks/auc_parts.py --world runs/worlds/bench-s0 \\
         runs/fidelity/bench-s0/prectr_v2_no_debias-s0 runs/fidelity/bench-s0/prectr_v2-s0
(both runs evaluated by ``prectr evaluate``; ``--split valid`` reads their validation day).

The pooled AUC of the served score over every exposed impression orders rows of different
requests against each other as much as rows of one request. It is read three ways on the
same rows, each paired B - A over the same request resamples as ``prectr compare``:

* ``pooled``: the AUC ``prectr evaluate`` reports;
* ``between``: every row scored by its request's mean served score (over the request's
  exposed impressions): how well the model orders requests by how much they click;
* ``within``: every row scored by its served score less that mean: the order within requests
  alone, pooled (``gauc_request``, the per-request AUCs averaged, beside it).

Also printed: the spread of the request means and the mean spread within a request, which set
how much each part weighs in the pooled AUC. Writes results/auc_parts_<A>_vs_<B>_<split>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import machine, write_record

from prectr.config import saved_experiment
from prectr.data.schema import read_log
from prectr.evaluation.context import EvaluationContext
from prectr.evaluation.run import SCORES, split_file
from prectr.evaluation.statistics import EvaluationRows
from prectr.evaluation.truth import LOG_COLUMNS, open_truth
from prectr.metrics.paired import (
    RESAMPLES,
    Statistic,
    auc_statistic,
    gauc_statistic,
    paired_bootstrap,
)

ROOT = Path(__file__).resolve().parents[1]


def parts(rows: EvaluationRows, score: np.ndarray) -> tuple[dict[str, Statistic], dict[str, float]]:
    """The statistics of one model's served scores on the exposed rows, and their spreads."""
    exposed = rows.exposed
    click, request, score = rows.click[exposed], rows.request[exposed], score[exposed]
    sums = np.bincount(request, weights=score, minlength=rows.request_ids.size)
    counts = np.bincount(request, minlength=rows.request_ids.size)
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    within = score - means[request]
    spread_within = np.sqrt(
        np.bincount(request, weights=within**2, minlength=counts.size)[counts > 0]
        / counts[counts > 0]
    )
    statistics = {
        "pooled": auc_statistic(click, score, request),
        "between": auc_statistic(click, means[request], request),
        "within": auc_statistic(click, within, request),
        "gauc_request": gauc_statistic(click, score, request, request),
    }
    spreads = {"sd_of_request_means": float(means[counts > 0].std()),
               "mean_sd_within_request": float(spread_within.mean())}  # fmt: skip
    return statistics, spreads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--world", type=Path, required=True, help="the log both runs scored")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    data = saved_experiment(args.run_a).data
    log = read_log(args.world, columns=LOG_COLUMNS, validate_log=False)
    context = EvaluationContext.build(open_truth(log, args.world), data.valid_days,
                                      data.test_days, args.split)  # fmt: skip
    models, spreads = {}, {}
    for label, run in (("a", args.run_a), ("b", args.run_b)):
        path = run / split_file(SCORES, args.split)
        scores = pq.read_table(path, columns=["request_id", "item_id", "score"])
        models[label], spreads[label] = parts(context.rows, context.aligned(scores, str(path)))
    differences = paired_bootstrap(models["a"], models["b"], context.rows.n_requests,
                                   args.resamples)  # fmt: skip
    n = context.rows.n_requests
    print(f"B - A, {args.run_b.name} - {args.run_a.name}, {args.split} split, {n:,} requests "
          f"(95% CI over {args.resamples} resamples)")  # fmt: skip
    summaries = {name: d.summary() for name, d in differences.items()}
    for name, s in summaries.items():
        print(f"  {name:13s} A {s['a']:.4f}  B {s['b']:.4f}  B - A {s['diff']:+.4f} "
              f"[{s['lo']:+.4f}, {s['hi']:+.4f}]")  # fmt: skip
    for label in ("a", "b"):
        print(f"  {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in spreads[label].items()))
    out = args.out or ROOT / "results" / (
        f"auc_parts_{args.run_a.name}_vs_{args.run_b.name}_{args.split}.json"
    )
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/auc_parts.py", *sys.argv[1:]]),
        "machine": machine(),
        "run_a": str(args.run_a), "run_b": str(args.run_b), "split": args.split,
        "requests": context.rows.n_requests, "resamples": args.resamples,
        "differences": summaries, "spreads": spreads,
    }  # fmt: skip
    write_record(out, record)


if __name__ == "__main__":
    main()
