"""Quality benchmark: train configs over several seeds on a world, evaluate, tabulate.

Run: .venv/bin/python benchmarks/quality.py --preset bench --configs configs/*_bench.yaml
Every run goes through the `prectr` command (simulate, train, evaluate), so each figure comes
with the exact commands that produced it. A run that already holds an evaluation.json is reused,
so an interrupted benchmark resumes. Writes results/quality_<world>[_<tag>].json and a
markdown table (results/quality_<world>[_<tag>].md, for BENCHMARKS.md): mean ± std over seeds,
RelaImpr (AUC) against the reference config (the first one, or --reference), the validation AUC
of each run's best epoch and each seed's best validation epoch.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from record import machine, write_record

from prectr.io import atomic_file
from prectr.metrics import relaimpr

ROOT = Path(__file__).resolve().parents[1]
PRECTR = str(Path(sys.executable).with_name("prectr"))
COLUMNS = ("auc", "gauc_user", "logloss", "ndcg@10", "irrelevant@10", "expected_clicks")
SLICE_COLUMNS = (("cold_start", "gauc_user"), ("unexposed", "irrelevant@10"))


def run(cmd: list[str], commands: list[str]) -> None:
    commands.append(shlex.join(cmd))
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def world_dir(args: argparse.Namespace, commands: list[str]) -> Path:
    knobs = [f"--{k.replace('_', '-')}={v}" for k, v in (s.split("=", 1) for s in args.world_set)]
    name = args.world_name or f"{args.preset}-s{args.world_seed}"
    out = ROOT / "runs" / "worlds" / name
    cmd = [PRECTR, "simulate", "--preset", args.preset, "--seed", str(args.world_seed),
           "--out", str(out), *knobs]  # fmt: skip
    if not (out / "world.json").is_file():
        run(cmd, commands)
    else:
        commands.append(shlex.join(cmd) + "   # (reused)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--world-set", nargs="*", default=[], metavar="KNOB=VALUE",
                        help="world knobs, e.g. click_model=dcm eta=1.5")  # fmt: skip
    parser.add_argument("--world-name", help="name of the world directory under runs/worlds")
    parser.add_argument("--reference", help="config name RelaImpr is measured against")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every config")
    parser.add_argument("--tag", help="suffix of the results files (e.g. ablations)")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("quality figures need at least 3 seeds")

    commands: list[str] = []
    world = world_dir(args, commands)
    results: dict[str, list[dict]] = {}
    for config in args.configs:
        name = yaml.safe_load(config.read_text()).get("name") or config.stem
        for seed in args.seeds:
            out = ROOT / "runs" / "quality" / world.name / f"{name}-s{seed}"
            train = [PRECTR, "train", str(config), "--log", str(world), "--out", str(out),
                     "--set", f"train.seed={seed}", *(f"--set={s}" for s in args.set)]  # fmt: skip
            evaluate = [PRECTR, "evaluate", str(out), "--world", str(world)]
            if not (out / "evaluation.json").is_file():
                if out.exists():
                    train.append("--resume")
                run(train, commands)
                run(evaluate, commands)
            else:
                commands += [shlex.join(train) + "   # (reused)", shlex.join(evaluate)]
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
    report = summarise(results, args.reference or next(iter(results)))
    report.update(
        world=str(world.relative_to(ROOT)),
        commands=commands,
        machine=machine(),
    )
    suffix = f"_{args.tag}" if args.tag else ""
    out = ROOT / "results" / f"quality_{world.name}{suffix}.json"
    write_record(out, report)
    table = markdown(report)
    with atomic_file(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
    print(f"wrote {out.with_suffix('.md')}")


def _values(runs: list[dict], section: str | None, key: str) -> np.ndarray:
    got = [(r["slices"][section] if section else r["metrics"]).get(key) for r in runs]
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
        f"epoch's validation AUC, the rest on the test day; RelaImpr against "
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


if __name__ == "__main__":
    main()
