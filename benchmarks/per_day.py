"""Does a difference between two models age? B - A on each validation day and each test day.

Run: .venv/bin/python benchmarks/per_day.py --runs runs/fidelity/bench-s0 --seeds 0 1 2 \\
         --pairs prectr_v1:prectr_v2 prectr_v2_no_debias:prectr_v2 --jobs 2
Reads evaluated runs (``RUNS/NAME-sSEED``, as benchmarks/quality.py and fidelity.py leave
them; for the validation days each also evaluated with ``prectr evaluate RUN --split valid``),
finds their days (the validation days in ``evaluation_valid.json``, the test days in
``evaluation.json``; ``--splits`` chooses which) and, for each pair, seed and split, runs
``prectr compare A B`` on the split pooled and on each of its days (``--day``; ``--split
valid`` for the validation days; outputs under RUNS/compare, reused when fresh). The seeds
are pooled as benchmarks/quality.py pools them: the request-level CI of the mean over seeds,
and the interval that also counts the spread between training seeds; for a split of several
days, also the interval that counts the dates as well as the seeds (:func:`add_over_dates`,
label "<split> over dates"). Prints, per pair, B - A by day with the intervals and each
seed's difference; writes results/per_day_<runs' directory>[_<tag>].json: per pair and label
("valid pooled", "test 2026-01-16", "test over dates", ...) the days compared, what the
comparisons skipped (a day without a broad-set sample, say) and every metric's difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quality import (
    add_comparison_flags,
    comparison,
    load_comparison,
    over_dates,
    pooled_differences,
    run_comparisons,
)
from record import machine, write_record
from runner import JOBS, ROOT

from prectr.evaluation.run import EVALUATION, split_file

SPLITS = ("valid", "test")
#: (section, metric) printed; the record holds every metric
PRINTED = (("all", "auc"), ("broad", "irrelevant@10"))


def split_days(run: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, list[str]]:
    """The days (ISO dates) a run was evaluated on, by split (in ``splits``' order)."""
    days = {}
    for split in splits:
        path = run / split_file(EVALUATION, split)
        if not path.is_file():
            how = " --split valid" if split == "valid" else ""
            raise SystemExit(f"{path} is missing: run `prectr evaluate {run}{how}` first")
        days[split] = sorted(json.loads(path.read_text())["per_day"])
    return days


def planned_days(
    runs: Path, a: str, b: str, seeds: list[int], splits: tuple[str, ...] = SPLITS
) -> dict[str, list[str]]:
    """The days every run of the pair was evaluated on, by split; refused where two runs differ."""
    found = {f"{name}-s{seed}": split_days(runs / f"{name}-s{seed}", splits)
             for seed in seeds for name in (a, b)}  # fmt: skip
    (reference, first), *rest = found.items()
    other = {run: days for run, days in rest if days != first}
    if other:
        listed = "; ".join(f"{run} on {days}" for run, days in other.items())
        raise SystemExit(f"{a} and {b} were not all evaluated on the same days: {reference} "
                         f"on {first}, but {listed}")  # fmt: skip
    return first


def day_labels(days: list[str]) -> dict[str, str | None]:
    """What a split of ``days`` is compared on, by label: the split pooled (day None), then
    each day; a one-day split, that day alone."""
    if len(days) == 1:
        return {days[0]: None}
    return {"pooled": None, **{day: day for day in days}}


def add_over_dates(labels: dict[str, dict], splits: list[str]) -> None:
    """Adds "<split> over dates" (:func:`quality.over_dates`) to a pair's ``labels`` ("test pooled",
    "test 2026-01-16", ...) for each split of ``splits`` compared on more than one day."""
    for split in dict.fromkeys(splits):
        by_day = {
            label.split(" ", 1)[1]: compared["differences"]
            for label, compared in labels.items()
            if label.startswith(f"{split} ") and not label.endswith((" pooled", " over dates"))
        }
        if len(by_day) > 1:
            labels[f"{split} over dates"] = {"days": list(by_day),
                                             "differences": over_dates(by_day)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, required=True, help="a world's runs directory")
    parser.add_argument("--world", type=Path,
                        help="the world the runs were evaluated on (default: "
                        "runs/worlds/<the runs directory's name>)")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pairs", nargs="+", required=True, metavar="A:B")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=SPLITS,
                        help="the splits compared (default both)")  # fmt: skip
    parser.add_argument("--tag", help="suffix of the results file")
    add_comparison_flags(parser)
    args = parser.parse_args()
    JOBS[0] = max(1, args.jobs)
    runs = ROOT / args.runs  # a relative path from the repository's root
    world = ROOT / args.world if args.world else ROOT / "runs" / "worlds" / runs.name
    planned, commands = {}, []
    for item in args.pairs:
        a, sep, b = item.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"--pairs {item}: expected A:B (two run names without -sSEED)")
        for split, days in planned_days(runs, a, b, args.seeds, tuple(args.splits)).items():
            for label, day in day_labels(days).items():
                planned[(f"{b} - {a}", f"{split} {label}")] = [
                    comparison({"run": runs / f"{a}-s{seed}"},
                               {"run": runs / f"{b}-s{seed}"}, world, args, split, day)
                    for seed in args.seeds
                ]  # fmt: skip
    run_comparisons([c for seeds in planned.values() for c in seeds], commands)
    pairs: dict[str, dict] = {}
    for (name, label), seeds in planned.items():
        loaded = [load_comparison(s, d) for _, s, d, _ in seeds]
        pairs.setdefault(name, {})[label] = {
            "days": loaded[0][0]["test_days"],
            "skipped": loaded[0][0]["skipped"],  # e.g. a day without a broad-set sample
            "differences": pooled_differences(loaded),
        }
    for labels in pairs.values():
        add_over_dates(labels, args.splits)
    for name, days in pairs.items():
        print(f"{name}, mean over seeds {args.seeds}: request CI; over seeds; each seed's")
        for day, compared in days.items():
            for section, metric in PRINTED:
                d = compared["differences"].get(section, {}).get(metric)
                if d is None:
                    continue
                if "cells" in d:  # over dates: one interval, the cells' mean
                    counted = "dates and seeds" if len(d["cells"]) > 1 else "dates"
                    print(f"  {day:<17} {section}/{metric:<14} {d['diff']:+.4f} "
                          f"[{d['lo']:+.4f}, {d['hi']:+.4f}] counting {counted}")  # fmt: skip
                    continue
                seeds = " / ".join(f"{x:+.4f}" for x in d["per_seed"])
                over = (f"[{d['seed_lo']:+.4f}, {d['seed_hi']:+.4f}]" if "seed_lo" in d
                        else "-")  # fmt: skip
                print(f"  {day:<17} {section}/{metric:<14} {d['diff']:+.4f} "
                      f"[{d['lo']:+.4f}, {d['hi']:+.4f}]  {over}  ({seeds})")  # fmt: skip
    suffix = f"_{args.tag}" if args.tag else ""
    out = ROOT / "results" / f"per_day_{runs.name}{suffix}.json"
    record = {"runs": str(args.runs), "world": str(world), "seeds": args.seeds,
              "bootstrap": {"resamples": args.bootstrap, "seed": args.bootstrap_seed},
              "pairs": pairs, "commands": commands, "machine": machine()}  # fmt: skip
    write_record(out, record)


if __name__ == "__main__":
    main()
