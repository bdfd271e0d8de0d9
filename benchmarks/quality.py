"""Quality benchmark: train configs over several seeds on a world, evaluate, compare, tabulate.

Run: .venv/bin/python benchmarks/quality.py --preset bench --configs configs/*_bench.yaml
Every run goes through the `prectr` command (simulate, train, evaluate, compare), so each figure
comes with the exact commands that produced it. A run that already holds an evaluation.json, and
a comparison whose JSON and draws exist, are reused, so an interrupted benchmark resumes.

Each config's runs are tested on their config's test days (at least 3, data.test_days). Every
config is compared with the reference config of the same seed (`prectr compare`: a paired
bootstrap over requests of B - A); the seeds are pooled by averaging their bootstrap differences
resample by resample (same world, same bootstrap seed: the same resamples), so each CI is the
CI of the mean difference over seeds; beside it, an interval that also counts how far one
training seed lands from another (``seed_lo``, ``seed_hi``: prectr.metrics.paired.seed_interval).
The reference is --reference, by default the best baseline
(the highest mean test AUC among configs whose name does not start with "prectr").

Writes results/quality_<world>[_<tag>].json and markdown (results/quality_<world>[_<tag>].md,
for BENCHMARKS.md): mean ± std over seeds of every metric, RelaImpr (AUC) against the
reference, the validation AUC of each run's best epoch and each seed's best validation epoch;
then the differences against the reference, pooled, by query frequency and user activity and
on the broad set, each "diff [lo, hi]" or "no difference" where the CI spans 0.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import machine, write_record
from runner import JOBS, PRECTR, ROOT, add_world_flags, run_all, training_job, world_dir

from prectr.config import load_experiment, read_config
from prectr.io import atomic_file
from prectr.metrics import relaimpr
from prectr.metrics.paired import RESAMPLES, date_interval, interval, seed_interval

RUNS = ROOT / "runs" / "quality"

COLUMNS = ("auc", "gauc_user", "logloss", "ndcg@10", "irrelevant@10", "expected_clicks")
SLICE_COLUMNS = (("user:cold", "gauc_user"), ("unexposed", "irrelevant@10"))
MIN_TEST_DAYS = 3
#: Differences tabulated: pooled, per slice family (bands as columns) and on the broad set.
DIFF_COLUMNS = ("auc", "gauc_user", "logloss", "ndcg@10", "irrelevant@10", "expected_clicks")
DIFF_FAMILIES = {
    "query frequency": ("query", ("head", "torso", "tail", "unseen")),
    "user activity": ("user", ("cold", "low", "mid", "high")),
}
DIFF_SLICE_METRICS = ("auc", "ndcg@10", "expected_clicks")
BROAD_COLUMNS = ("irrelevant@10", "ndcg@10", "recall@100", "expected_clicks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_world_flags(parser)
    parser.add_argument("--reference", help="config every other is compared with (default: "
                        "the best baseline by mean test AUC)")  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every config")
    parser.add_argument("--tag", help="suffix of the results files (e.g. ablations)")
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help="where the runs live, under WORLD/NAME-sSEED (default: "
                        "runs/quality; runs/fidelity holds the fidelity verdict's)")  # fmt: skip
    parser.add_argument("--no-compare", action="store_true",
                        help="tabulate the runs only, without the paired comparisons")  # fmt: skip
    add_comparison_flags(parser)
    args = parser.parse_args()
    JOBS[0] = max(1, args.jobs)
    if len(args.seeds) < 3:
        parser.error("quality figures need at least 3 seeds")
    for config in args.configs:
        test_days = load_experiment(config, args.set).data.test_days
        if test_days < MIN_TEST_DAYS:
            parser.error(
                f"quality figures need at least {MIN_TEST_DAYS} test days: {config} has "
                f"data.test_days={test_days} (or --set data.test_days={MIN_TEST_DAYS})"
            )

    commands: list[str] = []
    world = world_dir(args, commands)
    results = train_and_evaluate(args.configs, args.seeds, world, args.set, commands,
                                 args.runs.resolve())  # fmt: skip
    reference = args.reference or default_reference(results)
    report = summarise(results, reference)
    report["differences"] = (
        None if args.no_compare else differences(results, reference, world, args, commands)
    )
    report.update(
        world=str(world.relative_to(ROOT)),
        commands=commands,
        machine=machine(),
    )
    suffix = f"_{args.tag}" if args.tag else ""
    out = ROOT / "results" / f"quality_{world.name}{suffix}.json"
    write_record(out, report)
    table = markdown(report) + "\n" + differences_markdown(report)
    with atomic_file(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
    print(f"wrote {out.with_suffix('.md')}")


def add_comparison_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that compares runs: the bootstrap's resamples and seed, and
    how many commands run at once (:data:`JOBS`)."""
    parser.add_argument("--bootstrap", type=int, default=RESAMPLES, help="resamples of requests")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the resamples")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs (train and evaluate) and comparisons at once, each with its "
                        "share of the cores")  # fmt: skip


def run_name(config: Path) -> str:
    """The name a config's runs take: its ``name`` (through its bases), else its file's stem."""
    return read_config(config).get("name") or config.stem


def train_and_evaluate(
    configs: list[Path],
    seeds: list[int],
    world: Path,
    overrides: list[str],
    commands: list[str],
    root: Path = RUNS,
) -> dict[str, list[dict]]:
    """Each config trained with each seed on ``world`` and evaluated on its test days (runs
    under ``root``/WORLD/NAME-sSEED; one already evaluated is reused, one interrupted resumes):
    per config name, each seed's evaluation with its training figures."""
    runs, jobs = [], []
    for config in configs:
        name = run_name(config)
        for seed in seeds:
            out = root / world.name / f"{name}-s{seed}"
            runs.append((name, seed, out))
            job = training_job(config, world, out, seed, overrides, commands)
            if job is not None:
                jobs.append(job)
    run_all(jobs, commands)
    results: dict[str, list[dict]] = {}
    for name, seed, out in runs:
        evaluation = json.loads((out / "evaluation.json").read_text())
        training = json.loads((out / "metrics.json").read_text())
        results.setdefault(name, []).append(
            {
                "seed": seed,
                "run": str(out.relative_to(ROOT)),
                **evaluation,
                "valid_auc": training["best_valid"]["auc"],
                "train_samples_per_s": training["train_samples_per_s"],
                "peak_rss_mb": training["peak_rss_mb"],
                "best_epoch": training["best_valid"]["epoch"],
            }
        )
    return results


def default_reference(results: dict[str, list[dict]]) -> str:
    """The best baseline by mean test AUC (configs not named prectr*); the first config when
    every config is a PRECTR one."""
    baselines = {n: runs for n, runs in results.items() if not n.startswith("prectr")}
    if not baselines:
        return next(iter(results))
    return max(baselines, key=lambda n: np.nanmean(_values(baselines[n], None, "auc")))


def comparison(
    reference: dict,
    other: dict,
    world: Path,
    args: argparse.Namespace,
    split: str = "test",
    day: str | None = None,
) -> tuple[list[str], Path, Path, bool]:
    """`prectr compare` of one seed's runs (on their ``split``, or one ``day`` of it): the
    command, its outputs, and whether they are fresh (then they are reused)."""
    run_a, run_b = ROOT / reference["run"], ROOT / other["run"]
    name = f"{run_b.name}-vs-{run_a.name}"
    on = ([] if split == "test" else ["--split", split]) + ([] if day is None else ["--day", day])
    if on:
        name += "_" + "_".join(on[1::2])  # e.g. _valid_2026-01-15
    out = run_a.parent / "compare"  # beside the runs; a name may hold dots (weight-0.03-s0)
    summary, draws = out / f"{name}.json", out / f"{name}.draws.parquet"
    cmd = [PRECTR, "compare", str(run_a), str(run_b), "--world", str(world), *on, "--bootstrap",
           str(args.bootstrap), "--seed", str(args.bootstrap_seed), "--out", str(summary),
           "--draws", str(draws)]  # fmt: skip
    return cmd, summary, draws, fresh_comparison(summary, draws, (run_a, run_b), args, world, split)


def run_comparisons(
    comparisons: list[tuple[list[str], Path, Path, bool]], commands: list[str]
) -> None:
    """Run the comparisons (as :func:`comparison` gives them) that are not fresh; record the
    fresh ones' commands as reused."""
    commands += [shlex.join(cmd) + "   # (reused)" for cmd, _, _, fresh in comparisons if fresh]
    run_all([[cmd] for cmd, _, _, fresh in comparisons if not fresh], commands)


def load_comparison(summary: Path, draws: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A comparison's summary (`prectr compare --out`) and its resampled differences by
    ``section/metric`` (``--draws``)."""
    table = pq.read_table(draws)
    return json.loads(summary.read_text()), {c: table[c].to_numpy() for c in table.column_names}


def fresh_comparison(
    summary: Path, draws: Path, runs: tuple[Path, Path], args: argparse.Namespace,
    world: Path, split: str = "test",
) -> bool:  # fmt: skip
    """Whether a comparison's outputs exist, are newer than both evaluations (of ``split``),
    used the requested resamples and were made on ``split`` of ``world``."""
    from prectr.evaluation.run import EVALUATION, split_file

    if not (summary.is_file() and draws.is_file()):
        return False
    made = json.loads(summary.read_text())
    if made.get("split", "test") != split or made["log"] != str(world):
        return False
    evaluations = [r / split_file(EVALUATION, split) for r in runs]
    newer = all(summary.stat().st_mtime >= e.stat().st_mtime for e in evaluations)
    return newer and (made["bootstrap"]["resamples"], made["bootstrap"]["seed"]) == (
        args.bootstrap,
        args.bootstrap_seed,
    )


def pooled_differences(seeds: list[tuple[dict, dict[str, np.ndarray]]]) -> dict:
    """Per section and metric, the mean over seeds of B - A and the CI of that mean: each seed's
    resampled differences averaged resample by resample; beside it each seed's own B - A
    (``per_seed``, in the seeds' order), since the CI resamples requests and cannot show how
    far one training seed lands from another; with two seeds or more, the seed-aware interval
    (:func:`~prectr.metrics.paired.seed_interval`: ``seed_lo``, ``seed_hi``, its degrees of
    freedom ``seed_df``, None where every seed's difference is the same, and
    ``seed_spans_zero``), which counts that spread too. Metrics
    undefined in any seed are left out."""
    out: dict[str, dict] = {}
    keys = set.intersection(*(set(draws) for _, draws in seeds))
    for key in sorted(keys):
        section, metric = key.split("/", 1)
        diffs = [summary["sections"][section][metric]["diff"] for summary, _ in seeds]
        if any(d is None for d in diffs):
            continue
        pooled = np.mean([draws[key] for _, draws in seeds], axis=0)
        lo, hi = interval(pooled)
        seed_lo, seed_hi, seed_df = seed_interval(diffs, pooled)
        out.setdefault(section, {})[metric] = {
            "diff": float(np.mean(diffs)),
            "lo": lo,
            "hi": hi,
            "spans_zero": bool(lo <= 0.0 <= hi) if not np.isnan(lo) else None,
            "seeds": len(seeds),
            "per_seed": [float(d) for d in diffs],
            **({} if np.isnan(seed_lo) else {
                "seed_lo": seed_lo, "seed_hi": seed_hi,
                "seed_df": seed_df if np.isfinite(seed_df) else None,  # None: the seeds agree
                "seed_spans_zero": bool(seed_lo <= 0.0 <= seed_hi)}),
        }  # fmt: skip
    return out


def over_dates(by_day: dict[str, dict]) -> dict[str, dict]:
    """Per section and metric defined on every day of ``by_day`` (day -> its pooled
    differences, as :func:`pooled_differences` gives them), the interval that counts
    the dates and the training seeds (:func:`~prectr.metrics.paired.date_interval` over the
    cells ``per_seed`` by day): ``diff`` (the mean of the cells), ``lo``, ``hi``, ``df``
    (None where every cell is the same), ``spans_zero`` and the ``cells`` ``[seed][day]``;
    nothing without days."""
    out: dict[str, dict] = {}
    days = list(by_day.values())
    for section, metrics in days[0].items() if days else ():
        for metric in metrics:
            found = [day.get(section, {}).get(metric) for day in days]
            if any(d is None for d in found):
                continue
            cells = np.array([d["per_seed"] for d in found]).T  # (seeds, dates)
            centre, lo, hi, df = date_interval(cells)
            if np.isnan(lo):
                continue
            out.setdefault(section, {})[metric] = {
                "diff": centre, "lo": lo, "hi": hi, "df": df if np.isfinite(df) else None,
                "spans_zero": bool(lo <= 0.0 <= hi), "cells": cells.tolist(),
            }  # fmt: skip
    return out


def pair_differences(
    results: dict[str, list[dict]],
    pairs: dict[str, tuple[str, str]],
    world: Path,
    args: argparse.Namespace,
    commands: list[str],
    day: str | None = None,
) -> dict[str, dict]:
    """For each named pair (A, B) of configs, B - A seed by seed (`prectr compare`, on the
    test days or on one ``day`` of them), pooled over seeds (:func:`pooled_differences`)."""
    for a, b in pairs.values():
        missing = {a, b} - set(results)
        if missing:
            raise SystemExit(f"config(s) {', '.join(sorted(missing))} not among the configs")
    planned = {}
    for key, (a, b) in pairs.items():
        by_seed = {r["seed"]: r for r in results[a]}
        planned[key] = [comparison(by_seed[r["seed"]], r, world, args, day=day)
                        for r in results[b]]  # fmt: skip
    run_comparisons([c for seeds in planned.values() for c in seeds], commands)
    return {
        key: pooled_differences([load_comparison(summary, draws) for _, summary, draws, _ in seeds])
        for key, seeds in planned.items()
    }


def differences(
    results: dict[str, list[dict]],
    reference: str,
    world: Path,
    args: argparse.Namespace,
    commands: list[str],
) -> dict:
    """Every config against the reference, seed by seed, pooled over seeds."""
    if reference not in results:
        raise SystemExit(f"reference {reference!r} is not among the configs")
    pairs = {name: (reference, name) for name in results if name != reference}
    pooled = pair_differences(results, pairs, world, args, commands)
    return {"reference": reference, "resamples": args.bootstrap,
            "bootstrap_seed": args.bootstrap_seed, "by_config": pooled}  # fmt: skip


def _values(runs: list[dict], section: str | None, key: str) -> np.ndarray:
    got = [(r["slices"].get(section, {}) if section else r["metrics"]).get(key) for r in runs]
    return np.array([np.nan if v is None else v for v in got], dtype=float)


def summarise(results: dict[str, list[dict]], reference: str) -> dict:
    if reference not in results:
        raise SystemExit(f"reference {reference!r} is not among the configs")
    base_auc = _values(results[reference], None, "auc")
    summary = {}
    for name, runs in results.items():
        row = {}
        for key in COLUMNS:
            row[key] = _stat(_values(runs, None, key))
        for section, key in SLICE_COLUMNS:
            row[f"{section}.{key}"] = _stat(_values(runs, section, key))
        row["valid_auc"] = _stat(np.array([r["valid_auc"] for r in runs]))
        auc = _values(runs, None, "auc")
        row["relaimpr"] = _stat(
            np.array([relaimpr(a, b) for a, b in zip(auc, base_auc, strict=False)])
        )
        row["train_samples_per_s"] = _stat(np.array([r["train_samples_per_s"] for r in runs]))
        row["peak_rss_mb"] = _stat(np.array([r["peak_rss_mb"] for r in runs]))
        row["lift_vs_logging"] = _stat(np.array([r["online"]["lift"] for r in runs]))
        row["best_epochs"] = [r.get("best_epoch") for r in runs]
        summary[name] = row
    return {"reference": reference, "seeds": len(next(iter(results.values()))),
            "summary": summary, "runs": results}  # fmt: skip


def _stat(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values, ddof=1))
            if np.sum(~np.isnan(values)) > 1 else 0.0}  # fmt: skip


def markdown(report: dict) -> str:
    keys = ["valid_auc", *COLUMNS, *(f"{s}.{k}" for s, k in SLICE_COLUMNS), "relaimpr",
            "lift_vs_logging"]  # fmt: skip
    lines = [
        f"World `{report['world']}`, {report['seeds']} seeds, mean ± std; valid_auc: the best "
        f"epoch's validation AUC, the rest on the test days; RelaImpr against "
        f"`{report['reference']}`; lift_vs_logging: expected clicks against the logging ranker.",
        "",
        "| model | " + " | ".join(keys) + " | train samples/s | peak MB | best epochs |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for name, row in report["summary"].items():
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in keys]
        speed = f"{row['train_samples_per_s']['mean']:,.0f}"
        memory = f"{row['peak_rss_mb']['mean']:,.0f}"
        epochs = ",".join("?" if e is None else str(e) for e in row["best_epochs"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {speed} | {memory} | {epochs} |")
    return "\n".join(lines) + "\n"


def _cell(d: dict | None) -> str:
    """``diff [lo, hi]`` (bold when the CI excludes 0), or "no difference" with the figures;
    then the seed-aware interval where there is one."""
    if d is None:
        return "-"
    if d["lo"] is None or np.isnan(d["lo"]):
        return f"{d['diff']:+.4f}"
    figures = f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
    cell = f"no difference ({figures})" if d["spans_zero"] else f"**{figures}**"
    if "seed_lo" not in d:
        return cell
    return f"{cell}; over seeds [{d['seed_lo']:+.4f}, {d['seed_hi']:+.4f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]  # fmt: skip


def differences_markdown(report: dict) -> str:
    """The differences against the reference: pooled, by slice family and on the broad set."""
    diff = report["differences"]
    if diff is None:
        return "No paired comparisons in this run (--no-compare).\n"
    configs = diff["by_config"]
    if not configs:
        return ""
    pooled = [[n, *(_cell(d.get("all", {}).get(m)) for m in DIFF_COLUMNS)]
              for n, d in configs.items()]  # fmt: skip
    lines = [
        f"Paired differences against `{diff['reference']}` (config - reference, mean over "
        f"{report['seeds']} seeds) with the 95% CI of a bootstrap over requests "
        f"({diff['resamples']} resamples, seeds pooled resample by resample); bold: the CI "
        'excludes 0; "no difference": it spans 0.',
        "",
        *_table(["model", *DIFF_COLUMNS], pooled),
    ]
    for title, (family, bands) in DIFF_FAMILIES.items():
        rows = [
            [f"{n} · {m}", *(_cell(d.get(f"{family}:{b}", {}).get(m)) for b in bands)]
            for n, d in configs.items()
            for m in DIFF_SLICE_METRICS
        ]
        lines += ["", f"By {title}:", "", *_table(["model · metric", *bands], rows)]
    if any("broad" in d for d in configs.values()):
        rows = [[n, *(_cell(d.get("broad", {}).get(m)) for m in BROAD_COLUMNS)]
                for n, d in configs.items()]  # fmt: skip
        lines += ["", "On the broad set's sample:", "", *_table(["model", *BROAD_COLUMNS], rows)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
