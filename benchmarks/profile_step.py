"""Where a training step's time goes, module by module: forward and backward of each submodule.

Run: PYTHONPATH=. .venv/bin/python benchmarks/profile_step.py --world runs/worlds/bench-s0 \\
         --config configs/prectr_v2_bench.yaml --threads 1

The config's first batches are assembled as ``benchmarks/throughput.py`` assembles them; after
an unprofiled turn of ``--warmup`` and ``--steps`` steps (its rate is printed), the next
``--steps`` batches' steps (forward, loss, backward, the trainer's optimiser) run under
``torch.profiler``. Every submodule down to ``--depth`` dots of its name is a labelled
range, and so are the loss (``loss``, the synthetic negatives inside it as ``synthetic``), the
optimiser step and PRECTR's click trunk (``base_ctr.trunk``, run in parts: its first layer's
context part and the rest). An operator's forward time goes to the innermost label around it;
its backward time (the autograd node's) to the label of the operator that made the node. Prints
ms per step by label, largest first (0.5% of the step or more); times are the profiler's (its
overhead included), so read the shares. The allocator keeps ``--keep-freed-mb`` MB of freed
memory, as the trainer does by default (``benchmarks/throughput.py``'s option). ``--out``
also writes the figures, every label's, as JSON.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import torch
from record import machine, write_record
from throughput import Contender
from torch.profiler import ProfilerActivity, profile, record_function

from prectr.data.chunks import LogChunks
from prectr.train.allocator import KEEP_FREED_MB, keep_freed_memory

BACKWARD = "autograd::engine::evaluate_function"


def label_modules(model: torch.nn.Module, depth: int) -> None:
    """A profiler range around every submodule whose name has fewer than ``depth`` dots."""
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def enter(m: torch.nn.Module, _args: tuple, name: str = name) -> None:
            m._profile_range = record_function(name)
            m._profile_range.__enter__()

        def leave(m: torch.nn.Module, _args: tuple, _out: object) -> None:
            m._profile_range.__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)


def labelled(label: str, method):
    """``method`` run inside a profiler range ``label``."""

    def run(*args, **kwargs):
        with record_function(label):
            return method(*args, **kwargs)

    return run


def attribute(events, labels: set[str]) -> dict[str, tuple[float, float]]:
    """Forward and backward microseconds by label (see the module docstring)."""
    ranges = sorted((e for e in events if e.name in labels), key=lambda e: e.time_range.start)

    def innermost(event) -> str:
        inside = [r for r in ranges if r.time_range.start <= event.time_range.start
                  and event.time_range.end <= r.time_range.end]  # fmt: skip
        return min(inside, key=lambda r: r.time_range.elapsed_us()).name if inside else "other"

    forward, backward = collections.Counter(), collections.Counter()
    made_by: dict[int, str] = {}
    for e in events:
        if e.name in labels or e.name.startswith(BACKWARD):
            continue
        label = innermost(e)
        if e.sequence_nr >= 0:
            made_by.setdefault(e.sequence_nr, label)
        if e.cpu_parent is None or e.cpu_parent.name in labels:  # outermost operators only
            forward[label] += e.cpu_time_total
    for e in events:
        if e.name.startswith(BACKWARD):
            backward[made_by.get(e.sequence_nr, "other")] += e.cpu_time_total
    return {k: (forward[k], backward[k]) for k in forward.keys() | backward.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-freed-mb", type=int, default=KEEP_FREED_MB)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON (every label)")
    args = parser.parse_args()
    keep_freed_memory(args.keep_freed_mb)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch, LogChunks(args.world) as log:
        contender = Contender(args.config.stem, args.config, log, Path(scratch),
                              args.warmup + 2 * args.steps, args.threads)  # fmt: skip
        contender.turn(args.steps, args.warmup)  # unprofiled, for the rate
        model = contender.model
        model.loss = labelled("loss", model.loss)
        if hasattr(model, "_synthetic_negatives"):
            model._synthetic_negatives = labelled("synthetic", model._synthetic_negatives)
        if hasattr(model, "base_ctr"):  # PRECTR's trunk runs in parts, not as one module call
            for part in ("context_layer", "layered_click_logits"):
                setattr(model.base_ctr, part,
                        labelled("base_ctr.trunk", getattr(model.base_ctr, part)))  # fmt: skip
        contender.optimizer.step = labelled("optimizer", contender.optimizer.step)
        label_modules(model, args.depth)
        labels = {n for n, _ in model.named_modules() if n} | {"loss", "synthetic", "optimizer"}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            contender.turn(args.steps, 0)  # batches the first turn did not take
    times = attribute(prof.events(), labels)
    total = sum(f + b for f, b in times.values()) / 1000 / args.steps
    print(f"{args.config.stem}: {contender.rates[0]:,.0f} samples/s ({contender.rates[1]:,.0f} "
          f"under the profiler), {total:.1f} ms a step profiled")  # fmt: skip
    print(f"{'label':<32} {'forward ms':>11} {'backward ms':>12} {'share':>6}")
    rows = []
    for label, (f, b) in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        ms_f, ms_b = f / 1000 / args.steps, b / 1000 / args.steps
        share = (ms_f + ms_b) / total
        rows.append({"label": label, "forward_ms": ms_f, "backward_ms": ms_b, "share": share})
        if share >= 0.005:
            print(f"{label:<32} {ms_f:>11.1f} {ms_b:>12.1f} {share:>6.0%}")
    if args.out:
        write_record(args.out, {
            "world": str(args.world), "config": str(args.config), "steps": args.steps,
            "samples_per_s": contender.rates[0], "samples_per_s_profiled": contender.rates[1],
            "ms_per_step_profiled": total, "by_label": rows,
            "machine": machine(threads=args.threads, keep_freed_mb=args.keep_freed_mb),
        })  # fmt: skip


if __name__ == "__main__":
    main()
