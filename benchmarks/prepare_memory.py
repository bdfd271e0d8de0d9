"""`prectr prepare`'s peak memory and speed on worlds of growing size, one config at a time.

Run: .venv/bin/python benchmarks/prepare_memory.py --worlds runs/worlds/large-s0 \\
         runs/worlds/large4x-s0 --configs configs/dnn_bench.yaml configs/prectr_v2_bench.yaml
Each (world, config) prepares into a fresh temporary run directory in a child process under
`/usr/bin/time -v`: its wall time, its peak RSS (the kernel's maximum resident set size) and
candidates encoded per second. `--repo` runs another checkout's code instead (its root on the
child's path; e.g. main, for the figures before a change). `--same-as REPO` also prepares each
(world, config) with REPO's code, unmeasured, and records whether the two outputs are the same
file for file (every array of `features.npz`, every shard's rows and row groups, the fitted
features). Writes results/prepare_memory_<label>.json; with `--add`, adds its runs to that file's
(measured with the same code), so that one table can be measured in several sittings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import ROOT, machine, write_record

from prectr.data.schema import table_files


def prepare(repo: Path, config: Path, world: Path, out: Path, sets: list[str],
            timed: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """Prepare ``world`` with ``config`` into ``out`` using ``repo``'s code, in a child process
    (under ``/usr/bin/time -v`` when ``timed``)."""
    command = [*(["/usr/bin/time", "-v"] if timed else []), sys.executable, "-m", "prectr.cli",
               "prepare", str(config.resolve()), "--log", str(world.resolve()), "--out",
               str(out), *(x for s in sets for x in ("--set", s))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=True)


def differences(first: Path, second: Path) -> list[str]:
    """The files of two prepared run directories' ``data/`` and ``features/`` that differ (or
    that only one of them has)."""
    names = {p.relative_to(first) for p in first.rglob("*") if p.is_file()}
    others = {p.relative_to(second) for p in second.rglob("*") if p.is_file()}
    found = [f"only in one: {n}" for n in sorted(names ^ others)
             if n.parts[0] in ("data", "features")]  # fmt: skip
    return found + [str(n) for n in sorted(names & others) if not _same(first / n, second / n)]


def _same(a: Path, b: Path) -> bool:
    """Whether two files of prepared runs hold the same: every array of a ``.npz`` (name,
    type, values), a parquet file's rows and row groups, the fitted ``features.json``."""
    if a.suffix == ".npz":
        with np.load(a) as x, np.load(b) as y:
            return sorted(x.files) == sorted(y.files) and all(
                x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x.files
            )
    if a.suffix == ".parquet":
        groups = pq.ParquetFile(a).metadata.num_row_groups
        return pq.read_table(a).equals(pq.read_table(b)) and (
            groups == pq.ParquetFile(b).metadata.num_row_groups
        )
    return a.name != "features.json" or json.loads(a.read_text()) == json.loads(b.read_text())


def measure(repo: Path, config: Path, world: Path, out: Path, sets: list[str]) -> dict:
    """Prepare ``world`` with ``config`` using ``repo``'s code; its time, memory and rows/s."""
    done = prepare(repo, config, world, out, sets)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)[1]
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(clock.split(":"))))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(world, "impressions"))
    return {"world": world.name, "config": config.name, "impressions": rows,
            "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024),
            "impressions_per_s": round(rows / seconds)}  # fmt: skip


def commit_of(repo: Path) -> str:
    """The short commit a checkout is at."""
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def earlier_runs(path: Path, commit: str) -> tuple[list[dict], list[str]]:
    """The runs of a result file and the commands that measured them, to add more runs to
    (none when there is no file yet); refused when they were measured with other code than
    ``commit``."""
    if not path.is_file():
        return [], []
    earlier = json.loads(path.read_text())
    if earlier["code"]["commit"] != commit:
        raise ValueError(f"{path} was measured at commit {earlier['code']['commit']}, not "
                         f"{commit}: give the new runs another --label")  # fmt: skip
    return earlier["runs"], earlier.get("commands") or [earlier["command"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=Path, nargs="+", required=True)
    parser.add_argument("--configs", type=Path, nargs="+", required=True)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--label", default="this", help="names the result file")
    parser.add_argument("--same-as", type=Path, help="a checkout whose output each run is "
                        "compared with, file for file (prepared unmeasured)")  # fmt: skip
    parser.add_argument("--add", action="store_true", help="add the runs to the label's "
                        "result file (measured with the same code)")  # fmt: skip
    args = parser.parse_args()
    repo = args.repo.resolve()
    commit = commit_of(repo)
    path = ROOT / "results" / f"prepare_memory_{args.label}.json"
    runs, commands = earlier_runs(path, commit) if args.add else ([], [])
    for world in args.worlds:
        for config in args.configs:
            with tempfile.TemporaryDirectory(prefix="prectr-prepare-") as scratch:
                runs.append(measure(repo, config, world, Path(scratch) / "run", args.set))
                if args.same_as:
                    other = Path(scratch) / "other"
                    prepare(args.same_as.resolve(), config, world, other, args.set, timed=False)
                    differ = differences(Path(scratch) / "run", other)
                    runs[-1]["same_output"] = {"as": str(args.same_as), "commit": commit_of(
                        args.same_as), "same": not differ, "differences": differ[:20]}  # fmt: skip
            print(runs[-1])
    out = {
        "commands": [*commands, "python benchmarks/prepare_memory.py " + " ".join(sys.argv[1:])],
        "machine": machine(),
        "code": {"repo": str(repo), "commit": commit},
        "runs": runs,
    }
    write_record(path, out)


if __name__ == "__main__":
    main()
