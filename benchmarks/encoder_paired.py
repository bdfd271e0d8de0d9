"""Paired 95% CIs of relevance classifiers scored on the same held-out rows.

Run: .venv/bin/prectr encoder evaluate --log LOG [--held-out ...] STUDENT... --predictions P.parquet
     .venv/bin/python benchmarks/encoder_paired.py P.parquet --reference overlap --out OUT.json

Reads the per-row predictions ``prectr encoder evaluate --predictions`` writes (every model on
the same rows) and, for every model against ``--reference``, the difference B - A in macro-F1,
Spearman and accuracy (:mod:`prectr.metrics.grades`, the figures ``prectr encoder evaluate``
reports), with a paired percentile CI over the same resamples of held-out queries
(``prectr.metrics.paired``): every row of a query is drawn together, its requests too, since a
graded set loaded by ``prectr load pairs`` puts a pair judged twice in a second request of its
query, scored against one merged grade.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import machine, write_record

from prectr.metrics.grades import weighted_accuracy, weighted_macro_f1, weighted_spearman
from prectr.metrics.paired import RESAMPLES, Statistic, paired_bootstrap


def statistic(figure, grade: np.ndarray, other: np.ndarray, request: np.ndarray) -> Statistic:
    """``figure`` (one of :mod:`prectr.metrics.grades`' weighted figures) of ``grade`` against
    ``other`` under request weights ``(b, R)``, each row weighted by its request's count."""
    return lambda weights: figure(grade, other, weights[:, request])


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
        expected = frame["expected"].to_numpy().astype(np.float64)
        return {
            "macro_f1": statistic(weighted_macro_f1, grade, predicted, request),
            "spearman": statistic(weighted_spearman, grade, expected, request),
            "accuracy": statistic(weighted_accuracy, grade, predicted, request),
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
