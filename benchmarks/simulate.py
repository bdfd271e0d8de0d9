"""Simulator throughput and peak memory, one process per preset, pinned to one CPU core.

Run: .venv/bin/python benchmarks/simulate.py [--presets bench large]
Prints a table and writes results/simulate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from record import machine, write_record

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, os, resource, sys, time
os.sched_setaffinity(0, {0})
from prectr.data.simulate import load_config, simulate
started = time.perf_counter()
summary = simulate(load_config(sys.argv[1]), sys.argv[2])
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "summary": summary}))
"""


def run(preset: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / preset
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, preset, str(out)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
        disk_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    s = result["summary"]
    return {
        "preset": preset,
        "impressions": s["impressions"],
        "requests": s["requests"],
        "seconds": round(result["seconds"], 2),
        "impressions_per_second": round(s["impressions"] / result["seconds"]),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "disk_mb": round(disk_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["bench", "large"])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "simulate.json")
    args = parser.parse_args()
    rows = [run(p) for p in args.presets]
    header = (
        f"{'preset':8} {'impressions':>12} {'seconds':>8} {'imp/s (1 core)':>15} {'peak MB':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['preset']:8} {r['impressions']:>12,} {r['seconds']:>8.2f} "
            f"{r['impressions_per_second']:>15,} {r['peak_rss_mb']:>8.0f}"
        )
    report = {
        "command": "make bench  # or: .venv/bin/python benchmarks/simulate.py "
        + " ".join(f"--presets {' '.join(args.presets)}".split()),
        "note": "one process per preset, pinned to one core; includes writing and validating",
        "machine": machine(),
        "results": rows,
    }
    write_record(args.out, report)


if __name__ == "__main__":
    main()
