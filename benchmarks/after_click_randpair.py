"""Does a RandPair experiment tell the DCM's lambda? The pre-registered test (docs/offpolicy.md).

Run: .venv/bin/python benchmarks/after_click_randpair.py [--requests 40000] [--seeds 0 1 2 3 4]
Writes results/after_click_randpair.json. Synthetic logs, no world: 40 queries x 20 items with
attractions uniform in [0.05, 0.6], a noisy ranker showing the top 10, users whose taste
scales every attraction (lognormal, sigma 0.6: unlike users, the confounder), DCM clicks with
the world's examination curve and ``lambda`` 0.5 or 1, and on half the requests a fair coin
ordering one adjacent shown pair ``(j, j + 1)``, ``j`` uniform.

For each randomised pair ``t`` is a click at ``j``, ``b`` one at ``j + 1`` with none at ``j``,
``d`` clicks at both, ``s`` +1 when the pair is shown in the ranker's order and -1 when the
coin swapped it, and ``g_j = e_{j+1} / e_j``. Three estimates of lambda:

* ``pooled_true_curve``: ``sum d / sum (g_j t - b)`` with the click model's own ``g``: the
  pre-registered identity, which holds whatever the users (the coin makes the two items
  exchangeable);
* ``pooled_fixed_point``: the same with ``g`` from the curve harvested (AllPairs) on clicks
  adjusted at the lambda plugged in, the pre-registered estimator; reported as the map
  ``lambda -> estimate`` on a grid: a map close to the identity means the fixed point does not
  pin lambda down;
* ``oriented``: the root over the grid of ``sum s (g_j(lambda) t + b)``, which needs the
  ranker's order of the pair (that the coin swapped it), with ``g_j(lambda)`` harvested as above.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from record import machine, write_record

from prectr.data.simulate.clicks import ClickModel
from prectr.evaluation.propensity import adjusted_clicks, all_pairs

ROOT = Path(__file__).resolve().parents[1]
K, QUERIES, ITEMS = 10, 40, 20
GRID = np.round(np.arange(0.3, 1.01, 0.1), 2)
EXAM = ClickModel("dcm").examination(K)


def randpair_log(lam: float, n: int, share: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.6, (QUERIES, ITEMS))
    query = rng.integers(QUERIES, size=n)
    taste = rng.lognormal(0.0, 0.6, n)
    order = np.argsort(-(base[query] + rng.normal(0, 0.15, (n, ITEMS))), axis=1)[:, :K]
    chosen = np.flatnonzero(rng.random(n) < share)
    upper = rng.integers(K - 1, size=chosen.size)
    swapped = rng.random(chosen.size) < 0.5
    r, j = chosen[swapped], upper[swapped]
    order[r, j], order[r, j + 1] = order[r, j + 1], order[r, j].copy()
    attraction = np.minimum(0.95, np.take_along_axis(base[query], order, 1) * taste[:, None])
    click = ClickModel("dcm", dcm_lambda=lam).sample(attraction, rng)
    t = click[chosen, upper]
    return {
        "request": np.repeat(np.arange(n), K),
        "pair": (query[:, None] * ITEMS + order).ravel(),
        "position": np.tile(np.arange(1, K + 1), n),
        "click": click.ravel().astype(np.float64),
        "upper": upper,
        "top": t,
        "bottom": click[chosen, upper + 1] * (1 - t),
        "both": click[chosen, upper + 1] * t,
        "sign": np.where(swapped, -1.0, 1.0),
    }


def ratios(log: dict[str, np.ndarray], curve: np.ndarray) -> np.ndarray:
    return curve[log["upper"] + 1] / curve[log["upper"]]


def pooled(log: dict[str, np.ndarray], g: np.ndarray) -> float:
    return float(log["both"].sum() / (g * log["top"] - log["bottom"]).sum())


def one_log(lam: float, n: int, seed: int) -> dict:
    log = randpair_log(lam, n, 0.5, seed)
    fixed, oriented = [], []
    for assumed in GRID:
        clicks = adjusted_clicks(log["request"], log["position"], log["click"], assumed)
        g = ratios(log, all_pairs(log["pair"], log["position"], clicks, K).examination)
        fixed.append(pooled(log, g))
        oriented.append(float((log["sign"] * (g * log["top"] + log["bottom"])).sum()))
    return {
        "lambda": lam,
        "seed": seed,
        "randomised_pairs": int(log["upper"].size),
        "pooled_true_curve": pooled(log, ratios(log, EXAM)),
        "pooled_fixed_point_map": dict(zip(GRID.tolist(), fixed, strict=True)),
        "oriented_moment": dict(zip(GRID.tolist(), oriented, strict=True)),
        "oriented_root": _root(GRID, np.array(oriented)),
        "oriented_signal": float((log["sign"] * log["top"]).sum()),
    }


def _root(grid: np.ndarray, value: np.ndarray) -> float | None:
    """The first sign change of ``value`` over ``grid``, linearly interpolated (None: none)."""
    change = np.flatnonzero(np.sign(value[:-1]) != np.sign(value[1:]))
    if change.size == 0:
        return None
    i = int(change[0])
    return float(grid[i] + (grid[i + 1] - grid[i]) * value[i] / (value[i] - value[i + 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "after_click_randpair.json")
    args = parser.parse_args()
    logs = []
    for lam in (0.5, 1.0):
        for seed in args.seeds:
            found = one_log(lam, args.requests, seed)
            logs.append(found)
            worst = max(abs(v - a) for a, v in found["pooled_fixed_point_map"].items())
            print(f"lambda {lam} seed {seed}: true-curve estimate "
                  f"{found['pooled_true_curve']:.3f}; fixed-point map off the identity by at "
                  f"most {worst:.3f}; oriented root {found['oriented_root']}")  # fmt: skip
    write_record(args.out, {
        "command": "python benchmarks/after_click_randpair.py --requests "
        f"{args.requests} --seeds {' '.join(map(str, args.seeds))}",
        "machine": machine(),
        "grid": GRID.tolist(),
        "logs": logs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
