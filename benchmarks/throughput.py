"""Training throughput side by side: models take turns on the same machine in one process.

Run: .venv/bin/python benchmarks/throughput.py --world runs/worlds/bench-s0 \\
         --configs configs/dnn_bench.yaml configs/prectr_v2_bench.yaml
``--set section.key=value`` overrides every config, ``--set STEM:section.key=value`` only the
config whose file is ``STEM.yaml`` (e.g. ``prectr_v2_student_small:model_params.student=DIR``).
``PATH@LABEL`` names a config ``LABEL`` in place of its stem, so that one file can run twice
with different settings (``--configs configs/dnn_bench.yaml configs/dnn_bench.yaml@loop --set
loop:train.fused_optimizer=false``).
Each config's first training batches (the rows its loss reads) are assembled once, as many as
all its turns take (into the next epoch, reshuffled, when one epoch holds too few), and each
turn takes the batches after the previous turn's, as training would: a model that holds state
between steps, such as the student's reused text states (``student_reuse_steps``), is timed
as it trains. The models take turns (``--rounds`` rounds, A B A B ...), each turn timing
``--steps`` optimiser steps (forward, loss, backward, the trainer's optimiser) after a warm-up
of ``--warmup`` steps; assembling batches is left out (the trainer's samples/s in metrics.json
also counts the wait for data).
Samples are exposed impressions, as in ``metrics.json``. Taking turns spreads the machine's
noise over every model; the ratio to the first config (of the medians over rounds) is the
figure to quote. Beside it, each round's own ratio (a config's rate over the first config's
turn of the same round), whose spread shows how far the machine's drift between rounds moves
the figure. The allocator
keeps ``--keep-freed-mb`` MB of freed memory for the next step, process-wide, as the trainer
does at ``train.keep_freed_mb``'s default (:mod:`prectr.train.allocator`; 0: the C library's
default). Writes results/throughput_<world>.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from record import machine, write_record

from prectr.config import load_experiment
from prectr.data.chunks import LogChunks
from prectr.models import build_model
from prectr.train.allocator import KEEP_FREED_MB, keep_freed_memory
from prectr.train.data import load_prepared, prepare
from prectr.train.optim import build_optimizer, clip_grad_norm
from prectr.train.trainer import param_groups

ROOT = Path(__file__).resolve().parents[1]


class Contender:
    """One config: its model, optimiser and pre-assembled batches."""

    def __init__(self, label: str, config_path: Path, log: LogChunks, scratch: Path, batches: int,
                 threads: int, overrides: list[str] | None = None):  # fmt: skip
        self.config = load_experiment(config_path, [f"train.threads={threads}", *(overrides or [])])
        self.name = label if label != config_path.stem else self.config.name or label
        prepare(self.config, scratch / self.name, log)
        data = load_prepared(scratch / self.name, self.config.data.shards_uri)
        torch.manual_seed(0)
        self.model = build_model(self.config.model, data.encoded.specs, data.encoded.vocab_sizes,
                                 self.config.model_params)  # fmt: skip
        groups, train = param_groups(self.model, self.config), self.config.train
        self.optimizer = build_optimizer(self.model, groups, train.sparse_embeddings,
                                         train.fused_optimizer)  # fmt: skip
        stream = data.stream("train", self.config, True, self.model.training_rows)
        self.batches: list = []
        for epoch in itertools.count():  # until enough, or an epoch yields nothing
            before = len(self.batches)
            self.batches += itertools.islice(stream.epoch(epoch), batches - before)
            if len(self.batches) in (batches, before):
                break
        self.rates: list[float] = []
        self.taken = 0  # batches the turns so far have used

    def turn(self, steps: int, warmup: int) -> None:
        """Time ``steps`` steps on the batches after the previous turn's, after ``warmup``
        untimed ones."""
        self.model.train()
        samples, elapsed = 0, 0.0
        start, self.taken = self.taken, self.taken + warmup + steps
        for i, batch in enumerate(self.batches[start : self.taken]):
            started = time.perf_counter()
            loss = self.model.loss(batch, self.model(batch))["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(self.model.parameters(), self.config.train.clip_norm)
            self.optimizer.step()
            if i >= warmup:
                elapsed += time.perf_counter() - started
                samples += int(batch.exposed.sum())
        self.rates.append(samples / elapsed)


def labelled(configs: list[str]) -> dict[str, Path]:
    """``PATH[@LABEL]`` arguments by label (default: the file's stem); a label used twice is an
    error."""
    out: dict[str, Path] = {}
    for item in configs:
        path, _, label = item.partition("@")
        label = label or Path(path).stem
        if label in out:
            raise SystemExit(f"--configs {item}: label {label!r} is taken; add @LABEL")
        out[label] = Path(path)
    return out


def config_overrides(items: list[str], configs: list[str]) -> dict[str, list[str]]:
    """Each config's ``--set`` overrides, by label: unprefixed ones for all, ``STEM:`` ones for
    the config labelled ``STEM`` (an unknown label is an error naming the configs)."""
    overrides: dict[str, list[str]] = {c: [] for c in configs}
    for item in items:
        key, _, _ = item.partition("=")
        stem, _, setting = item.partition(":") if ":" in key else ("", "", item)
        chosen = [c for c in configs if not stem or c == stem]
        if not chosen:
            raise SystemExit(f"--set {item}: no config {stem!r} among "
                             f"{', '.join(configs)}")  # fmt: skip
        for config in chosen:
            overrides[config].append(setting)
    return overrides


def round_ratios(rates: list[float], base: list[float]) -> list[float]:
    """Each round's rate over the first config's rate in the same round."""
    return [rate / first for rate, first in zip(rates, base, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--configs", nargs="+", required=True, metavar="PATH[@LABEL]")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="[STEM:]SECTION.KEY=VALUE")
    parser.add_argument("--keep-freed-mb", type=int, default=KEEP_FREED_MB)
    parser.add_argument(
        "--out", type=Path, help="results file (default results/throughput_WORLD.json)"
    )
    args = parser.parse_args()
    configs = labelled(args.configs)
    overrides = config_overrides(args.set, list(configs))
    torch.set_num_threads(args.threads)
    keep_freed_memory(args.keep_freed_mb)
    with tempfile.TemporaryDirectory() as scratch, LogChunks(args.world) as log:
        contenders = [
            Contender(
                label,
                path,
                log,
                Path(scratch),
                args.rounds * (args.warmup + args.steps),
                args.threads,
                overrides[label],
            )
            for label, path in configs.items()
        ]
        for _ in range(args.rounds):
            for contender in contenders:
                contender.turn(args.steps, args.warmup)
    base = statistics.median(contenders[0].rates)
    rows = {
        c.name: {
            "samples_per_s": statistics.median(c.rates),
            "rounds": c.rates,
            "ratio_to_first": statistics.median(c.rates) / base,
            "ratio_per_round": round_ratios(c.rates, contenders[0].rates),
            "rows_per_batch": statistics.mean(len(b) for b in c.batches),
            "parameters": sum(p.numel() for p in c.model.parameters()),
        }
        for c in contenders
    }
    print(f"{'config':<28} {'samples/s':>12} {'ratio':>7} {'rounds':>15} {'rows/batch':>11}")
    for name, row in rows.items():
        spread = f"{min(row['ratio_per_round']):.4f}-{max(row['ratio_per_round']):.4f}"
        print(f"{name:<28} {row['samples_per_s']:>12,.0f} {row['ratio_to_first']:>7.4f} "
              f"{spread:>15} {row['rows_per_batch']:>11,.0f}")  # fmt: skip
    result = {
        "command": " ".join(["python", "benchmarks/throughput.py", "--world", str(args.world),
                             "--configs", *args.configs, "--steps", str(args.steps),
                             "--warmup", str(args.warmup),
                             "--rounds", str(args.rounds), "--threads", str(args.threads),
                             *(f"--set={item}" for item in args.set),
                             "--keep-freed-mb", str(args.keep_freed_mb),
                             *(["--out", str(args.out)] if args.out else [])]),
        "models": rows,
        "machine": machine(threads=args.threads),
    }  # fmt: skip
    write_record(args.out or ROOT / "results" / f"throughput_{args.world.name}.json", result)


if __name__ == "__main__":
    main()
