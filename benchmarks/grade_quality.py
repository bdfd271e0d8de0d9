"""How well each run's relevance estimate grades the pool, each run paired with the first.

Run: .venv/bin/python benchmarks/grade_quality.py --world runs/worlds/bench-s0 \\
         runs/fidelity/bench-s0/two_model-s0 runs/fidelity/bench-s0/prectr_v2-s0
(every run evaluated by ``prectr evaluate``; ``--split valid`` reads the validation days).

For a run whose scores hold a grade distribution (``grade_0..3``: PRECTR's and PRECTR-V2's
RSL, the two-model fusion's relevance model), on every evaluated candidate of the split whose
grade is known (a simulated world knows every candidate's), against that grade:

* ``accuracy``: the share whose likeliest grade is the true one;
* ``accuracy@r``: the same among the candidates of true grade ``r``;
* ``log_loss``: the mean of ``-log P(true grade)`` (probabilities clipped at 1e-7);
* ``expected_grade_error``: the mean of ``|E[grade] - true grade|``, the error of the utility
  ``E[grade] / 3`` that the fusion's product reads, in grades.

Each figure is a mean over candidates, its requests resampled together; every run minus the
first (the first with a grade distribution) gets a paired 95% CI over the same request
resamples as ``prectr compare``. The
candidates are those the runs' ranking rules rank (``benchmarks/ranking_rule.py``, which reads
the runs the same way). Writes results/grade_quality_<world>_<split>.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from ranking_rule import evaluated_runs
from record import machine, write_record

from prectr.metrics.paired import RESAMPLES, Statistic, mean_statistic, paired_bootstrap
from prectr.modules.rsl import GRADES

ROOT = Path(__file__).resolve().parents[1]
CLIP = 1e-7


def grade_statistics(
    probabilities: np.ndarray, grade: np.ndarray, request: np.ndarray
) -> dict[str, Statistic]:
    """The module docstring's figures of grade distributions ``(rows, GRADES)`` against the
    true ``grade`` of each row (-1: unknown, left out), as statistics of request weights."""
    known = grade >= 0
    true = np.where(known, grade, 0)
    correct = (probabilities.argmax(1) == true).astype(np.float64)
    chance = np.take_along_axis(probabilities, true[:, None], 1)[:, 0]
    expected = probabilities @ np.arange(GRADES, dtype=np.float64)
    out = {
        "accuracy": mean_statistic(correct, request, known),
        "log_loss": mean_statistic(-np.log(np.clip(chance, CLIP, 1.0)), request, known),
        "expected_grade_error": mean_statistic(np.abs(expected - true), request, known),
    }
    for r in range(GRADES):
        of_grade = known & (grade == r)
        if of_grade.any():
            out[f"accuracy@{r}"] = mean_statistic(correct, request, of_grade)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="the first is the reference")
    parser.add_argument("--world", type=Path, required=True, help="the world every run scored")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    context, scores, _ = evaluated_runs(args.runs, args.world, args.split)
    rows, n = context.rows, context.rows.n_requests
    graded = {}
    for run in args.runs:
        if f"grade_{GRADES - 1}" not in scores[run]:
            print(f"{run.name}: no grade distribution in its scores; left out")
            continue
        probabilities = np.stack([scores[run][f"grade_{g}"] for g in range(GRADES)], 1)
        graded[run.name] = grade_statistics(probabilities.astype(np.float64), rows.grade,
                                            rows.request)  # fmt: skip
    if not graded:
        raise ValueError("no run's scores hold a grade distribution (grade_0..3)")
    reference = next(iter(graded))
    print(f"{args.split} split, {n:,} requests, {int(rows.graded.sum()):,} graded candidates, "
          f"paired 95% CIs over {args.resamples} resamples against {reference}")  # fmt: skip
    results = []
    for name, stats in graded.items():
        entry: dict = {"run": name}
        entry["value"] = {k: s(np.ones((1, n)))[0].item() for k, s in stats.items()}
        if name != reference:
            d = paired_bootstrap(graded[reference], stats, n, args.resamples)
            entry[f"minus {reference}"] = {k: d[k].summary() for k in d}
        results.append(entry)
        print(f"{name:40s} " + "  ".join(f"{k} {v:.4f}" for k, v in entry["value"].items()))
        for k, s in entry.get(f"minus {reference}", {}).items():
            print(f"    {k} minus {reference}: {s['diff']:+.4f} [{s['lo']:+.4f}, {s['hi']:+.4f}]")
    out = args.out or ROOT / "results" / f"grade_quality_{args.world.name}_{args.split}.json"
    write_record(out, {
        "command": shlex.join([".venv/bin/python", "benchmarks/grade_quality.py", *sys.argv[1:]]),
        "machine": machine(), "world": str(args.world), "split": args.split, "requests": n,
        "graded_candidates": int(rows.graded.sum()), "resamples": args.resamples,
        "runs": [str(r) for r in args.runs], "results": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
