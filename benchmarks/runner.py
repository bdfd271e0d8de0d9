"""Running `prectr` commands for a benchmark: each recorded, several at once, and the world.

Every benchmark that trains goes through the `prectr` command, so each figure comes with the
exact commands that produced it (``commands``, written into its results file).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRECTR = str(Path(sys.executable).with_name("prectr"))
JOBS = [1]  # commands run at once (--jobs), set once by the benchmark's main()


def run(cmd: list[str], commands: list[str]) -> None:
    commands.append(shlex.join(cmd))
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=_env())


def _env() -> dict[str, str]:
    """Each of the --jobs concurrent commands gets its share of the cores for torch's threads."""
    threads = str(max(1, (os.cpu_count() or 1) // JOBS[0]))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_all(jobs: list[list[list[str]]], commands: list[str]) -> None:
    """Run each job's commands in order, up to --jobs jobs at once; the commands are recorded in
    the order the jobs were given, whatever order they finish in."""
    for job in jobs:
        commands.extend(shlex.join(cmd) for cmd in job)
    recorded: list[str] = []  # run() records here; the order above is the one kept

    def one(job: list[list[str]]) -> None:
        for cmd in job:
            run(cmd, recorded)

    with ThreadPoolExecutor(max_workers=JOBS[0]) as pool:
        for done in [pool.submit(one, job) for job in jobs]:
            done.result()


def training_job(
    config: Path, world: Path, out: Path, seed: int, overrides: list[str], commands: list[str],
    split: str = "test",
) -> list[list[str]] | None:  # fmt: skip
    """The commands that train ``config`` with ``seed`` on ``world`` into ``out`` and evaluate
    it on ``split``; None when ``out`` already holds that evaluation (the commands are then
    recorded as reused). A run interrupted before its evaluation resumes."""
    from prectr.evaluation.run import EVALUATION, split_file

    train = [PRECTR, "train", str(config), "--log", str(world), "--out", str(out),
             "--set", f"train.seed={seed}", *(f"--set={s}" for s in overrides)]  # fmt: skip
    evaluate = [PRECTR, "evaluate", str(out), "--world", str(world)]
    if split != "test":
        evaluate += ["--split", split]
    if (out / "config.yaml").is_file():
        check_reused_config(out, config, [*overrides, f"train.seed={seed}"])
    if (out / split_file(EVALUATION, split)).is_file():
        commands += [shlex.join(train) + "   # (reused)", shlex.join(evaluate)]
        return None
    if out.exists():
        train.append("--resume")
    return [train, evaluate]


def check_reused_config(run: Path, config: Path, overrides: list[str]) -> None:
    """Refuse to reuse or resume the run at ``run`` if it was trained with other settings than
    ``config`` with ``overrides`` gives now, at any key both hold: a config (or the base it
    names) edited since the run. Keys only one side holds are not compared (a setting the
    library added since, a model parameter left to its default), nor the name and the log,
    which the benchmark's run directory and ``--log`` set."""
    from prectr.config import load_experiment

    saved = yaml.safe_load((run / "config.yaml").read_text()) or {}
    wanted = load_experiment(config, overrides).to_dict()
    unset = {("name",), ("data", "log")}
    differ = [f"{'.'.join(key)}: {was!r} then, {now!r} now"
              for key, was, now in _differences(saved, wanted, ()) if key not in unset]  # fmt: skip
    if differ:
        raise SystemExit(f"{run}: trained with other settings than {config} gives now "
                         f"({'; '.join(differ)}); move the run away to train it again")  # fmt: skip


def _differences(
    a: dict, b: dict, at: tuple[str, ...]
) -> list[tuple[tuple[str, ...], object, object]]:
    """The keys (paths) both mappings hold with different values, mappings compared key by key."""
    found = []
    for key in a.keys() & b.keys():
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            found += _differences(a[key], b[key], (*at, key))
        elif a[key] != b[key]:
            found.append(((*at, key), a[key], b[key]))
    return sorted(found, key=lambda d: d[0])


def add_world_flags(parser: argparse.ArgumentParser, preset: str = "bench") -> None:
    """The flags :func:`world_dir` reads."""
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--world-set", nargs="*", default=[], metavar="KNOB=VALUE",
                        help="world knobs, e.g. click_model=dcm eta=1.5")  # fmt: skip
    parser.add_argument("--world-name", help="name of the world directory under runs/worlds")


def preset_world(preset: str, world_seed: int, commands: list[str]) -> Path:
    """:func:`world_dir` of a preset at a world seed, with no other knob."""
    return world_dir(argparse.Namespace(preset=preset, world_seed=world_seed, world_set=[],
                                        world_name=None), commands)  # fmt: skip


def world_dir(args: argparse.Namespace, commands: list[str], runs: Path = ROOT / "runs") -> Path:
    """The world the flags name, simulated once under ``runs``/worlds and reused after, if it
    was made as the flags say (:func:`check_reused_world`)."""
    knobs = [f"--{k.replace('_', '-')}={v}" for k, v in (s.split("=", 1) for s in args.world_set)]
    name = args.world_name or f"{args.preset}-s{args.world_seed}"
    out = runs / "worlds" / name
    cmd = [PRECTR, "simulate", "--preset", args.preset, "--seed", str(args.world_seed),
           "--out", str(out), *knobs]  # fmt: skip
    if not (out / "world.json").is_file():
        run(cmd, commands)
    else:
        check_reused_world(out, args)
        commands.append(shlex.join(cmd) + "   # (reused)")
    return out


def check_reused_world(world: Path, args: argparse.Namespace) -> None:
    """Refuse a world already at ``world`` whose knobs (its world.json) are not every one what
    the flags make (the preset, the world seed and the ``--world-set`` knobs), so that a
    ``valid_days`` asked for, say, is never silently not had."""
    from prectr.data.simulate import load_config

    knobs = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.world_set)}
    wanted = asdict(load_config(args.preset, overrides={**knobs, "seed": args.world_seed}))
    made = json.loads((world / "world.json").read_text())["config"]
    differ = [f"{k} {made.get(k)!r} (asked: {v!r})" for k, v in wanted.items() if made.get(k) != v]
    if differ:
        raise SystemExit(f"{world} holds a world made with {', '.join(differ)}: name another "
                         "with --world-name, or remove it")  # fmt: skip
