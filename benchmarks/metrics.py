"""Metric speed on one CPU core: GAUC over 10M rows and 1M groups, NDCG@10 over 10M rows and
200k groups (best of 3 each).

Run: .venv/bin/python benchmarks/metrics.py
Prints a table and writes results/metrics.json. The ratio against scikit-learn is measured in
the same run, not extrapolated: both compute the impression-weighted GAUC of the same 20k-group
subsample, ours vectorised, the other with a per-group roc_auc_score loop (timed once).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from record import machine, write_record
from sklearn.metrics import roc_auc_score

from prectr.metrics import gauc, ndcg_at_k

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ".venv/bin/python benchmarks/metrics.py"
ROWS = 10_000_000
GAUC_GROUPS = 1_000_000
NDCG_GROUPS = 200_000
SUBSAMPLE_GROUPS = 20_000


def best_of(n: int, fn: Callable[[], float]) -> tuple[float, float]:
    """The value of ``fn`` and its fastest wall time over ``n`` calls."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return value, min(times)


def sklearn_gauc(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted GAUC with one roc_auc_score call per two-class group."""
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0, True])
    aucs, weights = [], []
    for a, b in itertools.pairwise(bounds):
        rows = order[a:b]
        if 0 < y[rows].sum() < rows.size:
            aucs.append(roc_auc_score(y[rows], s[rows]))
            weights.append(rows.size)
    return float(np.average(aucs, weights=weights))


def main() -> None:
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    groups = rng.integers(0, GAUC_GROUPS, ROWS)
    labels = (rng.random(ROWS) < 0.2).astype(np.int8)
    scores = np.round(rng.random(ROWS), 4)  # about 1000 rows share each score: heavy ties
    grades = rng.integers(0, 4, ROWS)
    requests = rng.integers(0, NDCG_GROUPS, ROWS)
    sub = groups < SUBSAMPLE_GROUPS
    y_sub, s_sub, g_sub = labels[sub], scores[sub], groups[sub]

    _, gauc_s = best_of(3, lambda: gauc(labels, scores, groups))
    _, ndcg_s = best_of(3, lambda: ndcg_at_k(grades, scores, requests, k=10))
    ours, ours_sub_s = best_of(3, lambda: gauc(y_sub, s_sub, g_sub))
    theirs, sklearn_sub_s = best_of(1, lambda: sklearn_gauc(y_sub, s_sub, g_sub))
    if abs(ours - theirs) > 1e-9:
        raise AssertionError(f"gauc {ours} != per-group sklearn loop {theirs}")

    n_sub = int(sub.sum())
    rows = [
        (f"gauc, {ROWS:,} rows, {GAUC_GROUPS:,} groups", ROWS, gauc_s),
        (f"ndcg@10, {ROWS:,} rows, {NDCG_GROUPS:,} groups", ROWS, ndcg_s),
        (f"gauc, {n_sub:,} rows, {SUBSAMPLE_GROUPS:,} groups", n_sub, ours_sub_s),
        ("  same, per-group sklearn loop (measured)", n_sub, sklearn_sub_s),
    ]
    speedup = sklearn_sub_s / ours_sub_s
    print(f"{'computation':48} {'seconds':>9} {'rows/s':>12}")
    for name, n, seconds in rows:
        print(f"{name:48} {seconds:9.3f} {n / seconds:12,.0f}")
    print(f"speed-up over the per-group sklearn loop: {speedup:.0f}x (values agree to 1e-9)")
    report = {
        "command": COMMAND,
        "machine": machine(pinned_to_one_core=pinned, numpy=np.__version__),
        "seconds": {name.strip(): round(s, 4) for name, _, s in rows},
        "rows_per_second": {name.strip(): round(n / s) for name, n, s in rows},
        "speedup_vs_sklearn_loop": round(speedup, 1),
    }
    out = ROOT / "results" / "metrics.json"
    write_record(out, report)


if __name__ == "__main__":
    main()
