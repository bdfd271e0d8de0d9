"""Choosing knobs on the validation days: a grid trained and scored on validation only.

Run, e.g. the crowd's window and back-off for PRECTR-V2 on `bench`:
  .venv/bin/python benchmarks/sweep.py --config configs/prectr_v2_bench.yaml \
      --grid features.crowd_days=3,7,14 features.crowd_min_events=1,10 \
      --objective all:auc --tag v2_crowd

Every point of the grid (each combination of the values) is trained with `prectr train --set`
and scored with `prectr evaluate --split valid`, on the world's validation days: the runs take
the world's split (``data.valid_days`` and ``data.test_days`` from its world.json), so a world
simulated with ``--world-set valid_days=3`` (and a ``--world-name`` of its own) gives a choice
made on three validation dates. The test days are never scored here, so no choice looks at
them. The winner has the best mean over seeds of the objective (``section:metric``, e.g.
``all:auc``, ``broad:irrelevant@10``, ``user:cold:auc``; higher is better except for the
metrics in LOWER_IS_BETTER); ``--within METRIC=TOL`` first keeps only the points whose mean
``METRIC`` is within TOL of the best point's (e.g. the lowest broad irrelevant@10 among the
points within 0.002 AUC of the best). With ``--incumbent KEY=V …`` (today's default, a point
of the grid) and ``--min-gain G``, the incumbent stays unless that point beats its mean
objective by at least G and beats it in every seed (the rule of the crowd window's choice,
docs/fidelity.md); the record keeps the best mean beside the winner. A run that already holds
its validation evaluation is reused, so an interrupted sweep resumes (refused, by
``runner.check_reused_config``, if it was trained with other settings than the config, the grid
point and the world's split give now: a config edited since, or another split).

Writes results/sweep_<tag>.json: the grid, every point's validation metrics per seed and their
means, the point of the best mean, the winner, the rule that chose it, and the commands.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import numpy as np
from record import machine, write_record
from runner import JOBS, ROOT, add_world_flags, run_all, training_job, world_dir

from prectr.config import load_experiment
from prectr.data.simulate.world import World
from prectr.evaluation.run import EVALUATION, split_file
from prectr.metrics import LOWER_IS_BETTER

VALID_EVALUATION = split_file(EVALUATION, "valid")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``key=v1,v2`` items as key -> values (kept as text, parsed as YAML by `--set`). A
    value may be a YAML list: ``model_params.relevance_hidden=[64],[64,32]`` is two values,
    the commas inside brackets belonging to them."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"grid item {item!r}: expected section.key=value1,value2,...")
        if key in grid:
            raise ValueError(f"grid item {item!r}: {key} is given twice")
        grid[key] = split_values(values, item)
    return grid


def split_values(values: str, item: str) -> list[str]:
    """``values`` split at the commas outside brackets (``[]`` and ``{}``, YAML's flow
    collections); quoted commas are not recognised: write such a value as a list. Empty and
    repeated values are refused."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(values):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"grid item {item!r}: a closing bracket opens nothing")
        if char == "," and depth == 0:
            parts.append(values[start:at])
            start = at + 1
    if depth:
        raise ValueError(f"grid item {item!r}: a bracket is not closed")
    parts.append(values[start:])
    if any(not part.strip() for part in parts):
        raise ValueError(f"grid item {item!r}: an empty value")
    if len(set(parts)) < len(parts):
        raise ValueError(f"grid item {item!r}: a value is given twice")
    return parts


def points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in the order given."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def point_name(point: dict[str, str]) -> str:
    """A directory name for a grid point: its last key parts and values."""
    name = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in point.items()) or "base"
    return re.sub(r"[^\w.=+-]", "", name.replace(",", "-"))


def run_names(grid: dict[str, list[str]]) -> list[str]:
    """Each point's :func:`point_name`, refused if two points would share a run directory
    (names compared case-folded, as a case-insensitive file system would)."""
    names, seen = [], {}
    for point in points(grid):
        names.append(point_name(point))
        other = seen.setdefault(names[-1].casefold(), point)
        if other is not point:
            raise ValueError(f"grid points {other} and {point} share the run directory "
                             f"{names[-1]!r}")  # fmt: skip
    return names


def metric(evaluation: dict, spec: str) -> float | None:
    """The value ``section:metric`` names in an evaluation: ``all:auc`` (pooled),
    ``broad:irrelevant@10`` (the broad set) or ``SLICE:metric`` (e.g. ``user:cold:auc``)."""
    section, _, name = spec.rpartition(":")
    if section == "all":
        values = evaluation["metrics"]
    elif section == "broad":
        values = evaluation.get("broad", {})
    else:
        values = evaluation["slices"].get(section, {})
    return values.get(name)


def mean(values: list[float | None]) -> float | None:
    """The mean over seeds; None when some seed has no value."""
    return None if any(v is None for v in values) else float(np.mean(values))


def world_split(world: Path) -> list[str]:
    """The overrides that give a run the split of the simulated ``world`` (its world.json):
    its validation days and test days."""
    config = World(world).config
    return split_overrides(config.valid_days, config.test_days)


def split_overrides(valid_days: int, test_days: int) -> list[str]:
    """The ``--set`` overrides of a split of ``valid_days`` and ``test_days``."""
    return [f"data.valid_days={valid_days}", f"data.test_days={test_days}"]


def lower_is_better(spec: str) -> bool:
    return spec.rpartition(":")[2] in LOWER_IS_BETTER


def choose(means: list[dict[str, float | None]], objective: str,
           within: tuple[str, float] | None = None) -> int:  # fmt: skip
    """The index of the winning point given each point's mean metrics: the best ``objective``
    among the points whose ``within`` metric is within its tolerance of the best point's."""
    candidates = [i for i, m in enumerate(means) if m.get(objective) is not None]
    if within is not None:
        name, tolerance = within
        scored = [i for i in candidates if means[i].get(name) is not None]
        sign = -1.0 if lower_is_better(name) else 1.0
        best = max(sign * means[i][name] for i in scored)
        candidates = [i for i in scored if best - sign * means[i][name] <= tolerance + 1e-12]
    if not candidates:
        raise ValueError(f"no grid point has a value of {objective}")
    sign = -1.0 if lower_is_better(objective) else 1.0
    return max(candidates, key=lambda i: sign * means[i][objective])


def keep_incumbent(points: list[dict], best: int, incumbent: int, objective: str,
                   min_gain: float) -> int:  # fmt: skip
    """``best`` if its mean ``objective`` beats the ``incumbent`` point's by at least
    ``min_gain`` and its value beats the incumbent's in every seed; else ``incumbent``."""
    sign = -1.0 if lower_is_better(objective) else 1.0
    new, old = points[best], points[incumbent]
    if new["mean"][objective] is None or old["mean"][objective] is None:
        return incumbent
    gain = sign * (new["mean"][objective] - old["mean"][objective])
    every_seed = all(sign * (n[objective] - o[objective]) > 0
                     for n, o in zip(new["per_seed"], old["per_seed"], strict=True))  # fmt: skip
    return best if gain >= min_gain - 1e-12 and every_seed else incumbent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--grid",
        nargs="+",
        required=True,
        metavar="KEY=V1,V2",
        help="config keys and their values, e.g. model_params.mix_max=0.25,0.5",
    )
    parser.add_argument("--objective", default="all:auc", help="section:metric to optimise")
    parser.add_argument(
        "--within",
        metavar="METRIC=TOL",
        help="only points within TOL of the best on METRIC (section:metric)",
    )
    parser.add_argument("--incumbent", nargs="+", metavar="KEY=V",
                        help="today's default, a point of the grid: it stays unless beaten by "
                        "--min-gain on the mean and in every seed")  # fmt: skip
    parser.add_argument("--min-gain", type=float, default=0.0,
                        help="with --incumbent: the mean gain a point needs to replace "
                        "it")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every point")
    parser.add_argument("--tag", required=True, help="results/sweep_<tag>.json")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument(
        "--runs",
        type=Path,
        default=ROOT / "runs",
        help="where the worlds and the sweep's runs live",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    add_world_flags(parser)
    args = parser.parse_args()  # fmt: skip
    JOBS[0] = max(1, args.jobs)
    grid = parse_grid(args.grid)
    moved = [k for k in [*grid, *(s.split("=", 1)[0] for s in args.set)]
             if k in ("data", "data.valid_days", "data.test_days")]  # fmt: skip
    if moved:
        parser.error(f"{', '.join(moved)}: a sweep must not move the split (its validation "
                     "days would become test days); it takes the world's, set it with "
                     "--world-set valid_days=N --world-name NAME")  # fmt: skip
    within = None
    if args.within:
        name, _, tolerance = args.within.rpartition("=")
        within = (name, float(tolerance))
    incumbent = None
    if args.min_gain < 0 or (args.min_gain and not args.incumbent):
        parser.error("--min-gain is a gain (>= 0) over an --incumbent")
    if args.incumbent:
        wanted = {key: values[0] for key, values in parse_grid(args.incumbent).items()}
        if wanted not in points(grid):
            parser.error(f"--incumbent {' '.join(args.incumbent)} is not a point of the grid "
                         "(one value a key, written as in --grid)")  # fmt: skip
        incumbent = points(grid).index(wanted)
    for point in points(grid):  # every point's config must load before anything trains
        load_experiment(args.config, [*args.set, *(f"{k}={v}" for k, v in point.items())])
    try:
        names = run_names(grid)
    except ValueError as error:
        raise SystemExit(str(error)) from error

    commands: list[str] = []
    world = world_dir(args, commands, args.runs)
    split = world_split(world)
    jobs, runs = [], []
    for point, name in zip(points(grid), names, strict=True):
        overrides = [*args.set, *(f"{k}={v}" for k, v in point.items()), *split]
        for seed in args.seeds:
            out = args.runs / "sweep" / world.name / args.tag / f"{name}-s{seed}"
            runs.append((point, seed, out))
            job = training_job(args.config, world, out, seed, overrides, commands, "valid")
            if job is not None:
                jobs.append(job)
    run_all(jobs, commands)

    specs = [args.objective] + ([within[0]] if within else [])
    results = []
    for point in points(grid):
        evaluations = [
            json.loads((out / VALID_EVALUATION).read_text()) for p, _, out in runs if p == point
        ]
        per_seed = [{s: metric(e, s) for s in specs} for e in evaluations]
        means = {s: mean([v[s] for v in per_seed]) for s in specs}
        results.append({"point": point, "per_seed": per_seed, "mean": means,
                        "valid_days": evaluations[0]["test_days"],
                        "metrics": [e["metrics"] for e in evaluations]})  # fmt: skip
    best = choose([r["mean"] for r in results], args.objective, within)
    rule = f"best mean {args.objective} over seeds {args.seeds}"
    if within:
        rule += f" among the points within {within[1]} of the best {within[0]}"
    winner = best
    if incumbent is not None:
        winner = keep_incumbent(results, best, incumbent, args.objective, args.min_gain)
        rule += (f", replacing the incumbent {results[incumbent]['point']} only if at least "
                 f"{args.min_gain} better on the mean and better in every seed")  # fmt: skip
    record = {
        "config": str(args.config),
        "world": str(world),
        "split": "valid (the test days are never scored by a sweep)",
        "world_split": split,
        "grid": grid,
        "objective": args.objective,
        "rule": rule,
        "points": results,
        "best_mean": results[best]["point"],
        "winner": results[winner]["point"],
        "commands": commands,
        "machine": machine(),
    }
    write_record(args.results / f"sweep_{args.tag}.json", record)
    print(f"winner ({rule}): {results[winner]['point']} -> {results[winner]['mean']}")


if __name__ == "__main__":
    main()
