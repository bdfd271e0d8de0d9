"""A/A comparisons: pairs of runs with no mechanism between them, read with the request-level CI.

Run: .venv/bin/python benchmarks/aa.py
Compares (`prectr compare`, test days, the fidelity verdict's runs under runs/fidelity, which
``benchmarks/fidelity.py --seeds 0 1 2`` trains) runs that differ only where no mechanism
does:

* *threads*: seed 1's PRECTR-V2 and its no-debiasing run, trained on two threads against one
  (the same seed and batches; only the order of floating-point sums differs);
* *seeds*: PRECTR-V2 and PRECTR on `bench`, PRECTR-V2 on `stationary`, each training seed
  against each other.

If the request-level CI were a CI for what retraining the same config shows, about one pair in
twenty would exclude 0. Writes results/aa.json (each pair's B - A on the metrics below with
its CI, and by kind of pair and metric how many pairs' CIs exclude 0) and prints a table.
"""

from __future__ import annotations

import argparse
import itertools

from quality import add_comparison_flags, comparison, load_comparison, run_comparisons
from record import machine, write_record
from runner import JOBS, ROOT, preset_world

RUNS = ROOT / "runs" / "fidelity"
SEEDS = (0, 1, 2)
THREADS = (("prectr_v2_2threads-s1", "prectr_v2-s1"),
           ("prectr_v2_no_debias_2threads-s1", "prectr_v2_no_debias-s1"))  # fmt: skip
SEED_PAIRS = {"bench": ("prectr_v2", "prectr_v1"), "stationary": ("prectr_v2",)}
#: (section, metric) read from each comparison
METRICS = (("all", "auc"), ("all", "gauc_user"), ("all", "ndcg@10"), ("broad", "irrelevant@10"))


def planned_pairs() -> list[tuple[str, str, str, str]]:
    """(kind, preset, run A, run B) of every A/A pair."""
    pairs = [("threads", "bench", a, b) for a, b in THREADS]
    for preset, configs in SEED_PAIRS.items():
        for config in configs:
            pairs += [("seeds", preset, f"{config}-s{a}", f"{config}-s{b}")
                      for a, b in itertools.combinations(SEEDS, 2)]  # fmt: skip
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world-seed", type=int, default=0)
    add_comparison_flags(parser)
    args = parser.parse_args()
    JOBS[0] = max(1, args.jobs)
    commands: list[str] = []
    worlds = {preset: preset_world(preset, args.world_seed, commands) for preset in SEED_PAIRS}
    planned = []
    for kind, preset, a, b in planned_pairs():
        runs = [RUNS / worlds[preset].name / name for name in (a, b)]
        missing = [str(r) for r in runs if not (r / "evaluation.json").is_file()]
        if missing:
            raise SystemExit(f"no evaluated run at {', '.join(missing)}: run "
                             "benchmarks/fidelity.py --seeds 0 1 2 first")  # fmt: skip
        pair = ({"run": str(r.relative_to(ROOT))} for r in runs)
        planned.append(((kind, preset, a, b), comparison(*pair, worlds[preset], args)))
    run_comparisons([c for _, c in planned], commands)
    pairs = []
    for (kind, preset, a, b), (_, summary, draws, _) in planned:
        sections = load_comparison(summary, draws)[0]["sections"]
        cells = {f"{section}/{metric}": sections[section][metric] for section, metric in METRICS}
        pairs.append({"kind": kind, "world": preset, "a": a, "b": b, "differences": cells})
    record = {
        "pairs": pairs,
        "ci_excludes_zero": excluding_zero(pairs),
        "commands": commands,
        "machine": machine(),
    }
    write_record(ROOT / "results" / "aa.json", record)
    print(f"{'kind':<8} {'world':<11} {'B - A':<52} {'AUC':>30} {'broad irrelevant@10':>30}")
    for p in pairs:
        cells = (_figures(p["differences"][m]) for m in ("all/auc", "broad/irrelevant@10"))
        print(f"{p['kind']:<8} {p['world']:<11} {p['b'] + ' - ' + p['a']:<52} {'  '.join(cells)}")
    for kind, metrics in record["ci_excludes_zero"].items():
        counts = ", ".join(f"{m} {c['pairs']} of {c['of']}" for m, c in metrics.items())
        print(f"request CI excludes 0, {kind} pairs: {counts}")


def excluding_zero(pairs: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """By kind of pair and metric, how many pairs' CIs exclude 0, of those with a CI."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for kind in dict.fromkeys(p["kind"] for p in pairs):
        for metric in (f"{section}/{name}" for section, name in METRICS):
            cells = [p["differences"][metric] for p in pairs if p["kind"] == kind]
            defined = [c for c in cells if c["spans_zero"] is not None]
            out.setdefault(kind, {})[metric] = {
                "pairs": sum(not c["spans_zero"] for c in defined), "of": len(defined)}  # fmt: skip
    return out


def _figures(d: dict) -> str:
    if d["lo"] is None:
        return f"{d['diff']:+.4f} (no CI)" if d["diff"] is not None else "undefined"
    return f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


if __name__ == "__main__":
    main()
