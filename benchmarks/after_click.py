"""Can a click log alone tell how often users stop after a click (the DCM's lambda)?

Run: .venv/bin/python benchmarks/after_click.py [--preset bench] [--seeds 0]
     [--click-models pbm dcm] [--resamples 20]
Reuses the worlds of benchmarks/offpolicy.py (runs/worlds/offpolicy/<preset>-<model>-s<seed>)
and writes results/after_click.json.

The off-policy estimate under the dependent click model (docs/offpolicy.md) takes lambda as an
input. Two estimating equations that hold at the true lambda whatever the users' heterogeneity
(the logging ranker's choice of what to show is independent of the user) are tried on the
training days, each with a bootstrap over requests:

* ``above``: within the cells of one (query, item) pair at one position on one day, the
  adjusted click ``c lambda^-n`` (``n`` clicks above) must not depend on what was shown above.
  The instrument is the expected clicks above, ``sum theta_j a_X`` over the items ``X`` shown
  above (``theta`` the position-based harvest), with ``a_X`` the pair's click rate per unit of
  examination on the *other* days (so it holds none of this request's clicks). lambda solves
  ``sum (f - mean_cell f) c lambda^-n = 0`` (1 where no root lies below 1).
* ``strata``: the examination curve harvested from adjusted clicks must be the same on queries
  that draw many clicks per request and on those that draw few (a wrong lambda mis-corrects the
  first more). lambda minimises the squared log gap of the two curves over a grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
from offpolicy import world_at
from record import machine, write_record
from scipy.optimize import brentq

from prectr.evaluation.logged import LoggedRows, sum_above
from prectr.evaluation.propensity import adjusted_clicks, all_pairs

ROOT = Path(__file__).resolve().parents[1]
K = 10
LOWEST = 0.05  # the smallest lambda searched
GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


class ShownRows:
    """The training days' rows shown at positions 1..K, with their request's day and query."""

    def __init__(self, world) -> None:
        requests = world.requests()
        day = world.day_of(requests["timestamp"]).to_numpy()
        train = np.isin(day, world.split["train"])
        impressions = world.impressions(pa.array(requests["request_id"].to_numpy()[train]))
        rows = LoggedRows.from_tables(impressions, requests)
        shown = rows.exposed & (rows.position <= K)
        day_of_request = dict(zip(requests["request_id"].to_numpy(), day, strict=True))
        request_day = np.array([day_of_request[r] for r in rows.request_ids.to_numpy()])
        self.request = rows.request[shown]
        self.position = rows.position[shown]
        self.pair = np.unique(rows.pair[shown], return_inverse=True)[1]
        self.query = rows.pair[shown] // (rows.item.max() + 1)
        self.click = rows.click[shown]
        self.day = request_day[self.request]
        self.n_requests = len(rows.request_ids)


def lambda_from_above(rows: ShownRows, theta: np.ndarray, weight: np.ndarray) -> float:
    """The ``above`` design's lambda under request ``weight``."""
    w = weight[rows.request]
    pair_day = np.unique(rows.pair.astype(np.int64) * 1000 + rows.day, return_inverse=True)[1]
    exam = theta[rows.position - 1]
    other_exam = (
        np.bincount(rows.pair, w * exam)[rows.pair] - np.bincount(pair_day, w * exam)[pair_day]
    )
    other_clicks = (
        np.bincount(rows.pair, w * rows.click)[rows.pair]
        - np.bincount(pair_day, w * rows.click)[pair_day]
    )
    seen = other_exam > 0
    rate = np.where(seen, other_clicks / np.where(seen, other_exam, 1.0), 0.0)
    rate[~seen] = rate[seen].mean()
    f = sum_above(rows.request, rows.position, exam * rate)
    cell = np.unique(
        (rows.pair.astype(np.int64) * K + rows.position - 1) * 1000 + rows.day, return_inverse=True
    )[1]
    centred = f - (np.bincount(cell, w * f) / np.maximum(np.bincount(cell, w), 1e-12))[cell]
    n = sum_above(rows.request, rows.position, rows.click)

    def moment(lam: float) -> float:
        return float(np.sum(w * centred * rows.click * lam**-n))

    if moment(1.0) * moment(LOWEST) > 0:
        return 1.0 if abs(moment(1.0)) <= abs(moment(LOWEST)) else LOWEST
    return float(brentq(moment, LOWEST, 1.0))


def lambda_from_strata(rows: ShownRows, weight: np.ndarray) -> tuple[float, dict]:
    """The ``strata`` design's lambda under request ``weight``, and its gap at each lambda."""
    w = weight[rows.request]
    per_request = np.bincount(rows.request, rows.click, rows.n_requests)
    queries = np.unique(rows.query, return_inverse=True)[1]
    coded = np.zeros(rows.n_requests, np.int64)
    coded[rows.request] = queries
    rate = np.bincount(coded, weight * per_request) / np.maximum(np.bincount(coded, weight), 1e-12)
    many = rate[queries] > np.median(rate[queries])
    gaps = {}
    for lam in GRID:
        adjusted = adjusted_clicks(rows.request, rows.position, rows.click, lam)
        curves = [
            all_pairs(rows.pair[m], rows.position[m], adjusted[m], K, w[m]).examination
            for m in (many, ~many)
        ]
        gaps[lam] = float(np.sum(np.log(curves[0][1:] / curves[1][1:]) ** 2))
    return min(gaps, key=gaps.get), gaps


def world_entry(world, resamples: int) -> dict:
    rows = ShownRows(world)
    theta = all_pairs(rows.pair, rows.position, rows.click, K).examination  # position-based
    ones = np.ones(rows.n_requests)
    rng = np.random.default_rng(0)
    draws = [rng.poisson(1.0, rows.n_requests).astype(np.float64) for _ in range(resamples)]
    above = [lambda_from_above(rows, theta, w) for w in draws]
    strata = [lambda_from_strata(rows, w)[0] for w in draws]
    fitted_strata, gaps = lambda_from_strata(rows, ones)
    entry = {
        "click_model": world.config.click_model,
        "seed": world.config.seed,
        "true_lambda": world.click_model.after_click,
        "above": {"lambda": lambda_from_above(rows, theta, ones),
                  "range": np.percentile(above, [2.5, 97.5]).tolist()},
        "strata": {"lambda": fitted_strata, "range": np.percentile(strata, [2.5, 97.5]).tolist(),
                   "gap": gaps},
    }  # fmt: skip
    for design in ("above", "strata"):
        lo, hi = entry[design]["range"]
        print(f"  {design:7} lambda {entry[design]['lambda']:.3f}  bootstrap 95% range "
              f"[{lo:.3f}, {hi:.3f}]  (true {entry['true_lambda']})", flush=True)  # fmt: skip
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--click-models", nargs="+", default=["pbm", "dcm"])
    parser.add_argument("--resamples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "after_click.json")
    args = parser.parse_args()
    worlds = []
    for click_model in args.click_models:
        for seed in args.seeds:
            print(f"{args.preset} {click_model} seed {seed}", flush=True)
            worlds.append(world_entry(world_at(args.preset, click_model, seed), args.resamples))
    write_record(
        args.out,
        {
            "command": f".venv/bin/python benchmarks/after_click.py --preset {args.preset} "
            f"--seeds {' '.join(map(str, args.seeds))} --click-models "
            f"{' '.join(args.click_models)} --resamples {args.resamples}",
            "machine": machine(),
            "worlds": worlds,
        },
    )


if __name__ == "__main__":
    main()
