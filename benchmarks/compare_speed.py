"""`prectr compare` timed side by side: this checkout against another source tree of prectr.

Run: git worktree add /tmp/prectr-base BASE_COMMIT
     .venv/bin/python benchmarks/compare_speed.py --baseline /tmp/prectr-base \\
         --runs runs/fidelity/bench-s0/prectr_v1-s0 runs/fidelity/bench-s0/prectr_v2-s0 \\
         --world runs/worlds/bench-s0 --day 2026-01-16 --rounds 3

The same comparison (two runs, a world, a day or the whole split, ``--bootstrap`` resamples)
is run with the baseline tree first on the import path, then with this checkout, in turn for
``--rounds`` rounds, so that both meet the same state of a shared machine; each run's wall
seconds and its processes' CPU seconds are recorded, and the ratio is the median over rounds
of this checkout's seconds over the baseline's in the same round. Both trees' outputs (the
summary and every resample's differences) must be identical: a change meant to be faster
only is checked to compute the same thing. Writes results/compare_speed[_TAG].json (or
``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import ROOT, machine, write_record

PRECTR = str(Path(sys.executable).with_name("prectr"))


def timed(command: list[str], tree: Path) -> tuple[float, float]:
    """Wall and CPU (user + system, the command's processes) seconds of ``command`` run with
    the prectr of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} (prectr of {tree}) failed:\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same_outputs(a: tuple[Path, Path], b: tuple[Path, Path]) -> bool:
    """Whether two comparisons (summary, resampled differences) are identical."""
    (summary_a, draws_a), (summary_b, draws_b) = a, b
    return json.loads(summary_a.read_text()) == json.loads(summary_b.read_text()) and (
        pq.read_table(draws_a).equals(pq.read_table(draws_b))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another prectr tree")
    parser.add_argument("--runs", type=Path, nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--day", help="one test day (default: the whole test split)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/compare_speed"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, help="default: results/compare_speed[_TAG].json")
    args = parser.parse_args()
    if not (args.baseline / "prectr" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no prectr package there")

    trees = {"baseline": args.baseline.resolve(), "this": ROOT}
    args.work.mkdir(parents=True, exist_ok=True)
    day = [] if args.day is None else ["--day", args.day]
    seconds: dict[str, dict[str, list[float]]] = {t: {"wall": [], "cpu": []} for t in trees}
    commands = {}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            out = args.work / f"{name}.json"
            draws = args.work / f"{name}.draws.parquet"
            command = [PRECTR, "compare", *map(str, args.runs), "--world", str(args.world),
                       *day, "--bootstrap", str(args.bootstrap), "--out", str(out),
                       "--draws", str(draws)]  # fmt: skip
            wall, cpu = timed(command, tree)
            seconds[name]["wall"].append(wall)
            seconds[name]["cpu"].append(cpu)
            commands[name] = f"PYTHONPATH={tree} " + " ".join(command)
            print(f"{name:8s} wall {wall:6.1f} s  cpu {cpu:6.1f} s", flush=True)
    work = {n: (args.work / f"{n}.json", args.work / f"{n}.draws.parquet") for n in trees}
    identical = same_outputs(work["baseline"], work["this"])
    ratio = {
        k: float(np.median(np.divide(seconds["this"][k], seconds["baseline"][k])))
        for k in ("wall", "cpu")
    }
    print(f"this / baseline, median of the rounds: wall {ratio['wall']:.2f}, "
          f"cpu {ratio['cpu']:.2f}; outputs identical: {identical}")  # fmt: skip
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/compare_speed.py", *sys.argv[1:]]),
        "machine": machine(),
        "commands": commands,
        "seconds": seconds,
        "ratio_this_over_baseline": ratio,
        "outputs_identical": identical,
    }
    tag = f"_{args.tag}" if args.tag else ""
    write_record(args.out or ROOT / "results" / f"compare_speed{tag}.json", record)
    if not identical:
        raise SystemExit("the two trees' comparisons differ")


if __name__ == "__main__":
    main()
