"""Headroom per preset over world seeds: what each mechanism could add at most, from the truth.

Run: .venv/bin/python benchmarks/headroom.py [--presets bench stationary] [--seeds 0 1 2]
Simulates each preset and seed (reusing runs/worlds/<preset>-s<seed> when it exists), runs
`prectr headroom` on it, and writes results/headroom.json: one entry per preset with each seed's
result, the seed-to-seed spread of expected clicks, the targets of issue 15 checked, and by slice
the AUC that mining can add over a query embedding at most (``mining_auc_gain``: the crowd's
oracle against the one that knows what the training days taught of each query;
``window_auc_gain``: the oracle that decodes the features' crowd window against the same).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from record import machine, write_record

from prectr.headroom import seed_spread

ROOT = Path(__file__).resolve().parents[1]
PRECTR = str(Path(sys.executable).with_name("prectr"))
SPREAD_MULTIPLE = 10  # target: cold-user crowd headroom >= 10x the seed-to-seed spread


def run(cmd: list[str], commands: list[str]) -> None:
    commands.append(shlex.join(cmd))
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def preset_entry(preset: str, seeds: list[int], commands: list[str]) -> dict:
    results = []
    for seed in seeds:
        world = ROOT / "runs" / "worlds" / f"{preset}-s{seed}"
        if not (world / "world.json").is_file():
            run([PRECTR, "simulate", "--preset", preset, "--seed", str(seed), "--out",
                 str(world), "--overwrite"], commands)  # fmt: skip
        out = world / "headroom.json"
        run([PRECTR, "headroom", str(world), "--out", str(out)], commands)
        results.append(json.loads(out.read_text()))
    spread = seed_spread(results, "cold")
    crowd = np.array([r["slices"]["cold"]["crowd_gain"] for r in results])
    broad = [r["broad"] for r in results if r["broad"]]
    mining_auc, window_auc = (
        {
            name: [r["slices"][name][key] for r in results]
            for name in ("all", "cold_and_low", "unseen_query")
        }
        for key in ("mining_auc_gain", "window_auc_gain")
    )
    return {
        "seeds": {str(r["seed"]): r for r in results},
        "cold_crowd_gain": {"mean": float(crowd.mean()), "per_seed": crowd.tolist()},
        "cold_expected_clicks_seed_spread": spread,
        "cold_crowd_gain_over_spread": float(crowd.mean() / spread) if spread else None,
        "target_crowd_gain_10x_spread": bool(crowd.mean() >= SPREAD_MULTIPLE * spread),
        "mining_auc_gain": {
            name: {"mean": float(np.mean(v)), "per_seed": v} for name, v in mining_auc.items()
        },
        "window_auc_gain": {
            name: {"mean": float(np.mean(v)), "per_seed": v} for name, v in window_auc.items()
        },
        "broad_irrelevant@10": {
            name: float(np.mean([b[name]["irrelevant@10"] for b in broad]))
            for name in ("oracle", "relevance_blind")
        }
        if broad
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["bench", "stationary"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "headroom.json")
    args = parser.parse_args()
    commands: list[str] = []
    entries = {p: preset_entry(p, args.seeds, commands) for p in args.presets}
    print(
        f"{'preset':12} {'cold crowd gain':>16} {'per seed':>28} {'seed spread':>12} {'ratio':>7}"
    )
    for name, e in entries.items():
        gain = e["cold_crowd_gain"]
        per_seed = " ".join(f"{g:+.2%}" for g in gain["per_seed"])
        ratio = e["cold_crowd_gain_over_spread"]
        spread = e["cold_expected_clicks_seed_spread"]
        print(f"{name:12} {gain['mean']:>+16.2%} {per_seed:>28} {spread:>12.2%} "
              f"{ratio or float('nan'):>7.2f}")  # fmt: skip
    for key, what in (("mining_auc_gain", "the crowd's tolerance known"),
                      ("window_auc_gain", "decoded from a crowd window")):  # fmt: skip
        print(f"\n{'preset':12} AUC over a query embedding, {what} (mean of seeds)")
        for name, e in entries.items():
            print(f"{name:12} " + "  ".join(f"{s} {g['mean']:+.4f}"
                                            for s, g in e[key].items()))  # fmt: skip
    write_record(
        args.out,
        {
            "command": ".venv/bin/python benchmarks/headroom.py --presets "
            + " ".join(args.presets)
            + " --seeds "
            + " ".join(map(str, args.seeds)),
            "commands": commands,
            "machine": machine(),
            "presets": entries,
        },
    )


if __name__ == "__main__":
    main()
