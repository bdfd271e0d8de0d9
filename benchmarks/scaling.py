"""Distributed training on this machine: 1 process against N, same config, same samples.

Run: .venv/bin/python benchmarks/scaling.py --world runs/worlds/bench-s0 \\
         --config configs/dnn_bench.yaml --processes 1 2 --seeds 0 1 2
The log is encoded once (`prectr prepare`, its peak memory measured). Each (processes, seed)
run then trains `--epochs` epochs from a hard-linked copy of that prepared run under
`torchrun --standalone --nproc-per-node N` (gloo on CPU, NCCL with `--device cuda`), the
machine's cores split evenly between the processes (`train.threads`), the global batch
(`data.batch_size`) the same for every N. The runs alternate (1, N, 1, N, ...) so the machine's
noise spreads over both. ``--variants`` adds settings to compare in the same alternation, each a
comma-separated list of overrides (``train.sparse_embeddings=false
train.sparse_embeddings=true``: dense against row-wise embedding gradients); the result file
then carries ``--tag``. Reported per run: validation AUC, samples/s over all processes (data
wait included), the largest share of time a process waited for data, peak RSS per process.
Writes results/scaling_<world>_<config>[_<tag>].json.

With ``--engines`` (``local``, ``ray:N``: a local Ray of N CPUs, one worker each) it first
prepares every ``--world`` with each engine in a child process, sampling the resident memory
of the child's whole process tree every 0.1 s (`psutil`): the driver's peak, the largest peak of
a Ray worker (an actor encoding chunks), the peak of Ray's own processes together (raylet,
GCS, ...) and the peak of the whole tree; candidates encoded per second, in all and per worker.
Training (1 against ``--processes``) then runs on the first world, and everything goes to
results/scaling.json. ``--processes`` with no value skips training:

    .venv/bin/python benchmarks/scaling.py --world /tmp/stream-large /tmp/stream-large4x \\
        --config configs/prectr_v2_bench.yaml --engines local ray:1 ray:2 --processes
A Ray worker's resident memory counts the pages of Ray's shared object store it has touched
(the states and chunks it received), which the driver's and the others' count too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml
from record import machine, write_record

from prectr.config import load_experiment
from prectr.data.schema import table_files
from prectr.io import atomic_file

ROOT = Path(__file__).resolve().parents[1]


def prepare(config: Path, world: Path, out: Path, overrides: list[str]) -> dict:
    """Encode the log once in a child process; its wall time and peak RSS."""
    sets = [x for o in overrides for x in ("--set", o)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prectr.cli", "prepare", str(config), "--log",
                    str(world), "--out", str(out), *sets], check=True)  # fmt: skip
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def prepare_with(config: Path, world: Path, out: Path, engine: str) -> dict:
    """Prepare ``world`` with ``engine`` (``local`` or ``ray:N``) in a child process; its wall
    time, candidates/s and the peak resident memory of its processes (see the docstring)."""
    kind, _, cpus = engine.partition(":")
    extra = ["--engine", "ray", "--cpus", cpus] if kind == "ray" else []
    command = [sys.executable, "-m", "prectr.cli", "prepare", str(config.resolve()), "--log",
               str(world.resolve()), "--out", str(out), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    child = psutil.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    peaks: dict[int, tuple[str, int]] = {}  # pid -> (role, peak RSS in bytes)
    system = tree = 0
    while child.poll() is None:
        sample = _tree_rss(child)
        for pid, (role, rss) in sample.items():
            known, peak = peaks.get(pid, (role, 0))
            peaks[pid] = ("worker" if "worker" in (role, known) else role, max(rss, peak))
        system = max(system, sum(r for role, r in sample.values() if role == "ray"))
        tree = max(tree, sum(r for _, r in sample.values()))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(world, "impressions"))
    workers = [rss for role, rss in peaks.values() if role == "worker"]
    encoding = len(workers) or 1  # the local engine encodes in the driver
    mb = 1024**2
    return {
        "world": world.name, "engine": engine, "impressions": rows,
        "seconds": round(seconds, 1), "impressions_per_s": round(rows / seconds),
        "workers": encoding,
        "impressions_per_s_per_worker": round(rows / seconds / encoding),
        "driver_peak_rss_mb": round(max(r for role, r in peaks.values() if role == "driver") / mb),
        "worker_peak_rss_mb": round(max(workers, default=0) / mb),
        "ray_processes_peak_rss_mb": round(system / mb),
        "tree_peak_rss_mb": round(tree / mb),
    }  # fmt: skip


def _tree_rss(root: psutil.Process) -> dict[int, tuple[str, int]]:
    """The resident memory of ``root`` (the driver) and of each of its descendants, with its
    role: a Ray worker that ran this engine's actor, or another Ray process."""
    out = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            title = " ".join(process.cmdline())
            rss = process.memory_info().rss
        except psutil.Error:  # ended while sampled
            continue
        role = "driver" if process.pid == root.pid else "ray"
        out[process.pid] = ("worker" if "_Worker" in title else role, rss)
    return out


def train(config: Path, prepared: Path, run: Path, processes: int, overrides: list[str]) -> dict:
    """Train from a copy of the prepared run with ``processes`` torchrun processes."""
    shutil.copytree(prepared, run, copy_function=os.link)
    with atomic_file(run / "config.yaml") as tmp:  # the same data, this run's train settings
        settings = load_experiment(config, overrides).to_dict()
        tmp.write_text(yaml.safe_dump(settings, sort_keys=False))
    sets = [x for o in overrides for x in ("--set", o)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), "-m", "prectr.cli", "train", str(config),
               "--out", str(run), *sets]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "processes": processes,
        "valid_auc": metrics["best_valid"]["auc"],
        "valid_logloss": metrics["best_valid"]["logloss"],
        "train_samples": metrics["train_samples"],
        "samples_per_s": metrics["train_samples_per_s"],
        "data_wait_share": metrics["data_wait_share"],
        "peak_rss_mb_per_process": metrics["peak_rss_mb_per_process"],
        "wall_seconds": round(wall, 1),
    }


def summary(runs: list[dict]) -> list[dict]:
    """Per (variant, processes): against the same variant's fewest processes (``speedup``,
    ``auc_minus_fewest_processes``) and against the first variant's
    (``speedup_over_first_variant``, ``auc_minus_first_variant``)."""
    by: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        by.setdefault((r["variant"], r["processes"]), []).append(r)
    first = runs[0]["variant"]
    fewest = min(n for _, n in by)
    rows = []
    for (variant, n), rs in by.items():
        base = by[variant, fewest]
        base_auc = statistics.mean(r["valid_auc"] for r in base)
        base_rate = statistics.mean(r["samples_per_s"] for r in base)
        aucs = [r["valid_auc"] for r in rs]
        rates = [r["samples_per_s"] for r in rs]
        rate = statistics.mean(rates)
        first_auc = statistics.mean(r["valid_auc"] for r in by[first, fewest])
        first_rate = statistics.mean(r["samples_per_s"] for r in by[first, fewest])
        rows.append({
            "variant": variant,
            "processes": n,
            "seeds": len(rs),
            "valid_auc_mean": statistics.mean(aucs),
            "valid_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
            "auc_minus_fewest_processes": statistics.mean(aucs) - base_auc,
            "samples_per_s_mean": rate,
            "samples_per_s_min": min(rates),
            "samples_per_s_max": max(rates),
            "speedup": rate / base_rate,
            "speedup_over_first_variant": rate / first_rate,
            "auc_minus_first_variant": statistics.mean(aucs) - first_auc,
            "data_wait_share_max": max(r["data_wait_share"] for r in rs),
            "peak_rss_mb_max": max(max(r["peak_rss_mb_per_process"]) for r in rs),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, nargs="+", required=True,
                        help="the log(s); training runs on the first")  # fmt: skip
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--engines", nargs="+", default=[],
                        help="prepare engines to compare: local, ray:N (N CPUs)")  # fmt: skip
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="CPU threads shared out among the processes")  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--scratch", type=Path, help="where runs go (default: a temporary dir)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[""],
        help="settings compared in the alternation, each KEY=VALUE[,KEY=VALUE]",
    )
    parser.add_argument("--tag", default="", help="suffix of the result file's name")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="prectr-scaling-"))
    engines = []
    for world in args.world:
        for engine in args.engines:
            out = scratch / f"{world.name}-{engine.replace(':', '')}"
            engines.append(prepare_with(args.config, world, out, engine))
            shutil.rmtree(out)
            print(json.dumps(engines[-1]))
    world = args.world[0]
    base = [f"train.epochs={args.epochs}", f"train.device={args.device}", "train.patience=1"]
    data = {"engines": engines} if engines else {}
    if args.processes:
        data["prepare"] = prepare(args.config, world, scratch / "prepared", base)
        print("prepared:", json.dumps(data["prepare"]))
    runs = []
    for seed in args.seeds:
        for v, variant in enumerate(args.variants):
            for n in args.processes:
                threads = max(1, args.cores // n)
                overrides = [*base, f"train.seed={seed}", f"train.threads={threads}",
                             *filter(None, variant.split(","))]  # fmt: skip
                result = train(args.config, scratch / "prepared", scratch / f"v{v}-p{n}-s{seed}",
                               n, overrides)  # fmt: skip
                runs.append({"seed": seed, "variant": variant, "threads_per_process": threads,
                             **result})  # fmt: skip
                print(json.dumps(runs[-1]))
    out = {
        "command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "world": " ".join(str(w) for w in args.world),
        "config": str(args.config),
        **data,
        "runs": runs,
        "summary": summary(runs) if runs else [],
    }
    for row in out["summary"]:
        print(json.dumps(row))
    tag = f"_{args.tag}" if args.tag else ""
    name = "scaling" if engines else f"scaling_{world.name}_{args.config.stem}"
    path = ROOT / "results" / f"{name}{tag}.json"
    write_record(path, out)
    if args.scratch is None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
