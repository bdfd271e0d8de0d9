"""`prectr prepare`'s peak memory and speed on worlds of growing size, one config at a time.

Run: .venv/bin/python benchmarks/prepare_memory.py --worlds runs/worlds/large-s0 \\
         runs/worlds/large4x-s0 --configs configs/dnn_bench.yaml configs/prectr_v2_bench.yaml
Each (world, config) prepares into a fresh temporary run directory in a child process under
`/usr/bin/time -v`: its wall time, its peak RSS (the kernel's maximum resident set size) and
candidates encoded per second. `--repo` runs another checkout's code instead (its root on the
child's path; e.g. main, for the figures before a change). Writes
results/prepare_memory_<label>.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from record import ROOT, machine, write_record

from prectr.data.schema import table_files


def measure(repo: Path, config: Path, world: Path, out: Path, sets: list[str]) -> dict:
    """Prepare ``world`` with ``config`` using ``repo``'s code; its time, memory and rows/s."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "prectr.cli", "prepare",
               str(config.resolve()), "--log", str(world.resolve()), "--out", str(out),
               *(x for s in sets for x in ("--set", s))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=True)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)[1]
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(clock.split(":"))))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(world, "impressions"))
    return {"world": world.name, "config": config.name, "impressions": rows,
            "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024),
            "impressions_per_s": round(rows / seconds)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=Path, nargs="+", required=True)
    parser.add_argument("--configs", type=Path, nargs="+", required=True)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--label", default="this", help="names the result file")
    args = parser.parse_args()
    repo = args.repo.resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    runs = []
    for world in args.worlds:
        for config in args.configs:
            with tempfile.TemporaryDirectory(prefix="prectr-prepare-") as scratch:
                runs.append(measure(repo, config, world, Path(scratch) / "run", args.set))
            print(runs[-1])
    out = {
        "command": "python benchmarks/prepare_memory.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "code": {"repo": str(repo), "commit": commit},
        "runs": runs,
    }
    write_record(ROOT / "results" / f"prepare_memory_{args.label}.json", out)


if __name__ == "__main__":
    main()
