"""Paired 95% CIs of relevance classifiers scored on the same held-out rows.

Run: .venv/bin/prectr encoder evaluate --log LOG [--held-out ...] STUDENT... --predictions P.parquet
     .venv/bin/python benchmarks/encoder_paired.py P.parquet --reference overlap --out OUT.json

Reads the per-row predictions ``prectr encoder evaluate --predictions`` writes (every model on
the same rows) and, for every model against ``--reference``, the difference B - A in macro-F1,
Spearman and accuracy (``prectr.encoder.evaluate``'s definitions), with a paired percentile
CI over the same resamples of held-out queries (``prectr.metrics.paired``): every row of a
query is drawn together, its requests too, since a graded set loaded by ``prectr load pairs``
puts a pair judged twice in a second request of its query, scored against one merged grade.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import machine, write_record

from prectr.metrics.paired import RESAMPLES, Statistic, paired_bootstrap

GRADES = 4


def _row_weights(weights: np.ndarray, request: np.ndarray) -> np.ndarray:
    return weights[:, request]


def macro_f1(grade: np.ndarray, predicted: np.ndarray, request: np.ndarray) -> Statistic:
    """The F1 of each grade averaged over the grades that occur as a grade or a prediction in
    the resample (a grade predicted but never true scores 0)."""

    def statistic(weights: np.ndarray) -> np.ndarray:
        w = _row_weights(weights, request)
        f1, present = [], []
        for g in range(GRADES):
            true, hit = grade == g, predicted == g
            both = (w * (true & hit)).sum(1)
            sizes = (w * true).sum(1) + (w * hit).sum(1)
            present.append(sizes > 0)
            f1.append(np.where(sizes > 0, 2 * both / np.maximum(sizes, 1e-12), 0.0))
        return np.sum(f1, 0) / np.maximum(np.sum(present, 0), 1)

    return statistic


def accuracy(grade: np.ndarray, predicted: np.ndarray, request: np.ndarray) -> Statistic:
    def statistic(weights: np.ndarray) -> np.ndarray:
        w = _row_weights(weights, request)
        return (w * (grade == predicted)).sum(1) / w.sum(1)

    return statistic


def _midranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each row's rank among the resample's rows (a row drawn k times counts k times), ties
    sharing the mean of their ranks: ``(b, n)``."""
    order = np.argsort(values, kind="stable")
    _, starts, group = np.unique(values[order], return_index=True, return_inverse=True)
    group_w = np.add.reduceat(w[:, order], starts, axis=1)
    before = np.cumsum(group_w, 1) - group_w
    ranks = np.empty_like(w)
    ranks[:, order] = (before + (group_w + 1) / 2)[:, group]
    return ranks


def spearman(grade: np.ndarray, expected: np.ndarray, request: np.ndarray) -> Statistic:
    """Rank correlation of the expected grade with the grade (ties averaged), each row weighted
    by how often the resample draws its request."""

    def statistic(weights: np.ndarray) -> np.ndarray:
        w = _row_weights(weights, request)
        x, y = _midranks(expected, w), _midranks(grade.astype(np.float64), w)
        total = w.sum(1, keepdims=True)
        x = x - (w * x).sum(1, keepdims=True) / total
        y = y - (w * y).sum(1, keepdims=True) / total
        return (w * x * y).sum(1) / np.sqrt((w * x * x).sum(1) * (w * y * y).sum(1))

    return statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument(
        "--reference", default="overlap", help="the model every other is paired with"
    )
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    table = pq.read_table(args.predictions).to_pandas()
    models = list(dict.fromkeys(table["model"]))
    if args.reference not in models:
        raise SystemExit(f"{args.predictions}: no model {args.reference!r} (models: {models})")
    frames = {m: table[table["model"] == m].reset_index(drop=True) for m in models}
    first = frames[args.reference]
    _, request = np.unique(first["query"].to_numpy(), return_inverse=True)  # the unit drawn
    grade = first["grade"].to_numpy().astype(np.int64)
    if np.unique(first["expected"]).size < 2:
        raise SystemExit(f"{args.predictions}: {args.reference} predicts one expected grade "
                         "for every row: no Spearman to pair with; pick another "
                         "--reference")  # fmt: skip
    keys = ["request", "query", "title"]

    def statistics(frame) -> dict[str, Statistic]:
        if not frame[keys].equals(first[keys]):
            raise SystemExit(f"{args.predictions}: the models' rows differ")
        predicted = frame["predicted"].to_numpy().astype(np.int64)
        return {
            "macro_f1": macro_f1(grade, predicted, request),
            "spearman": spearman(grade, frame["expected"].to_numpy().astype(np.float64), request),
            "accuracy": accuracy(grade, predicted, request),
        }

    reference = statistics(first)
    differences = {}
    for model in models:
        if model == args.reference or frames[model]["expected"].nunique() < 2:
            continue  # a constant prediction (majority) has no Spearman to pair
        paired = paired_bootstrap(reference, statistics(frames[model]), int(request.max()) + 1,
                                  args.resamples)  # fmt: skip
        differences[model] = {name: d.summary() for name, d in paired.items()}
        for name, d in differences[model].items():
            print(f"{model} - {args.reference} {name}: {d['diff']:+.4f} "
                  f"[{d['lo']:+.4f}, {d['hi']:+.4f}]  ({d['a']:.4f} -> {d['b']:.4f})")  # fmt: skip
    write_record(args.out, {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "predictions": str(args.predictions), "reference": args.reference,
        "rows": int(grade.size), "queries": int(request.max()) + 1,
        "resamples": args.resamples, "differences": differences, "machine": machine(),
    })  # fmt: skip


if __name__ == "__main__":
    main()
