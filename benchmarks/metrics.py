"""Metric speed: GAUC over 10M rows and 1M groups, NDCG@10 over 10M rows and 200k groups.

Run: .venv/bin/python benchmarks/metrics.py
Prints a table and writes results/metrics.json. The ratio against scikit-learn is measured in
the same run, on the same 20k-group subsample (a per-group roc_auc_score loop).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from prectr.io import atomic_file
from prectr.metrics import gauc, ndcg_at_k

ROOT = Path(__file__).resolve().parents[1]
ROWS = 10_000_000


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def sklearn_gauc(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> float:
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
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 1_000_000, ROWS)
    labels = (rng.random(ROWS) < 0.2).astype(np.int8)
    scores = np.round(rng.random(ROWS), 4)  # ties included
    grades = rng.integers(0, 4, ROWS)
    requests = rng.integers(0, 200_000, ROWS)

    gauc_s = best_of(3, lambda: gauc(labels, scores, groups))
    ndcg_s = best_of(3, lambda: ndcg_at_k(grades, scores, requests, k=10))
    sub = groups < 20_000
    ours_sub = best_of(3, lambda: gauc(labels[sub], scores[sub], groups[sub]))
    sklearn_sub = best_of(1, lambda: sklearn_gauc(labels[sub], scores[sub], groups[sub]))
    assert abs(gauc(labels[sub], scores[sub], groups[sub]) - sklearn_gauc(
        labels[sub], scores[sub], groups[sub])) < 1e-9  # fmt: skip

    rows = [
        ("gauc, 10M rows, 1M groups", gauc_s),
        ("ndcg@10, 10M rows, 200k groups", ndcg_s),
        (f"gauc, {int(sub.sum()):,} rows, 20k groups", ours_sub),
        ("  same with a per-group sklearn loop", sklearn_sub),
    ]
    for name, seconds in rows:
        print(f"{name:42} {seconds:8.3f} s")
    print(f"speed-up over the sklearn loop: {sklearn_sub / ours_sub:.0f}x")
    report = {
        "command": ".venv/bin/python benchmarks/metrics.py",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "seconds": {name.strip(): round(s, 4) for name, s in rows},
        "speedup_vs_sklearn_loop": round(sklearn_sub / ours_sub, 1),
    }
    out = ROOT / "results" / "metrics.json"
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
