"""A quiet machine for throughput figures: wait until other processes go quiet before a
training, and measure how many cores they used before and during it."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import psutil

from peer.environment import sh


def busy_cores() -> float:
    """Cores' worth of CPU time all processes used, since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_until_quiet(limit_s: float, threshold: float = 0.25) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` of a core;
    return the share last measured."""
    deadline = time.monotonic() + limit_s
    while True:
        before, start = busy_cores(), time.monotonic()
        time.sleep(2.0)
        share = (busy_cores() - before) / (time.monotonic() - start)
        if share < threshold or time.monotonic() >= deadline:
            return round(max(share, 0.0), 2)
        print(f"  waiting: other processes use {share:.1f} cores", flush=True)


def measured(cmd: list[str], log: Path, env: dict, wait: dict) -> tuple[str, dict]:
    """Run ``cmd`` after waiting for a quiet machine (drawing on the budget ``wait["left"]``
    seconds); also return how busy other processes kept the machine meanwhile (cores: total
    busy CPU time less this command's and its reaped children's, per second of wall time)."""
    quiet = None
    if wait["left"] > 0:
        started = time.monotonic()
        quiet = wait_until_quiet(wait["left"])
        wait["left"] -= time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, start = busy_cores(), time.monotonic()
    out = sh(cmd, log, env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    others = max(0.0, (busy_cores() - busy - ours) / wall)
    return out, {"others_cores_before": quiet, "others_cores_during": round(others, 2)}
