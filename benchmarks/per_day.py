"""Does a difference between two models age? B - A on the validation day and on each test day.

Run: .venv/bin/python benchmarks/per_day.py --runs runs/fidelity/bench-s0 --seeds 0 1 2 \\
         --pairs prectr_v1:prectr_v2 prectr_v2_no_debias:prectr_v2
Reads evaluated runs (``RUNS/NAME-sSEED``, as benchmarks/quality.py and fidelity.py leave
them): the validation day's AUC at the best epoch (``metrics.json``, ``best_valid``) and each
test day's (``evaluation.json``, ``per_day``). Prints, per pair, B - A by day, the mean over
seeds and each seed's; point differences, no CI (the days' paired CIs come from `prectr
compare`, pooled over the test days). Writes results/per_day_<runs' world>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from record import machine, write_record
from runner import ROOT


def day_aucs(run: Path) -> dict[str, float]:
    """The validation day's AUC (``valid``) and each test day's, by date."""
    evaluation = json.loads((run / "evaluation.json").read_text())
    training = json.loads((run / "metrics.json").read_text())
    days = {day: m["auc"] for day, m in sorted(evaluation["per_day"].items())}
    return {"valid": training["best_valid"]["auc"], **days}


def pair_by_day(runs: Path, a: str, b: str, seeds: list[int]) -> dict[str, dict]:
    """B - A on each day: the mean over seeds and each seed's."""
    per_seed = []
    for seed in seeds:
        aucs = [day_aucs(runs / f"{name}-s{seed}") for name in (a, b)]
        if list(aucs[0]) != list(aucs[1]) or (per_seed and list(per_seed[0]) != list(aucs[0])):
            listed = " and ".join(", ".join(run) for run in aucs)
            raise SystemExit(f"{a} and {b} were not all evaluated on the same days "
                             f"(seed {seed}: {listed})")  # fmt: skip
        per_seed.append({day: aucs[1][day] - aucs[0][day] for day in aucs[0]})
    days = list(per_seed[0])
    return {day: {"mean": float(np.mean([s[day] for s in per_seed])),
                  "per_seed": [s[day] for s in per_seed]} for day in days}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, required=True, help="a world's runs directory")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pairs", nargs="+", required=True, metavar="A:B")
    parser.add_argument("--tag", help="suffix of the results file")
    args = parser.parse_args()
    pairs = {}
    for item in args.pairs:
        a, sep, b = item.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"--pairs {item}: expected A:B (two run names without -sSEED)")
        pairs[f"{b} - {a}"] = pair_by_day(args.runs, a, b, args.seeds)
    for name, days in pairs.items():
        print(f"{name}, AUC, mean over seeds {args.seeds} (each seed's):")
        for day, d in days.items():
            seeds = " / ".join(f"{x:+.4f}" for x in d["per_seed"])
            print(f"  {day:<11} {d['mean']:+.4f}  ({seeds})")
    suffix = f"_{args.tag}" if args.tag else ""
    out = ROOT / "results" / f"per_day_{args.runs.name}{suffix}.json"
    record = {"runs": str(args.runs), "seeds": args.seeds, "pairs": pairs, "machine": machine()}
    write_record(out, record)


if __name__ == "__main__":
    main()
