"""Reference figures of the teacher's two training loops, to compare one commit with another.

Run: .venv/bin/python benchmarks/loops_reference.py --world runs/worlds/small-s0
(`prectr simulate --preset small --seed 0`) at each commit, and compare the files.

* The grade head (``train_head``) on fixed synthetic hidden states (1,500 pairs of SmolLM2's
  and MiniLM's widths, 200 queries, a weak grade signal), seeds 0-2 (the head's start and
  batch order; since 042d550 the validation queries are the hash split's, the same for every
  seed, so figures from before it do not reproduce): its validation figures and a digest of
  its weights. Unlike BENCHMARKS' head row, it needs no SmolLM2 forward pass, so a
  change that keeps the loop's computation keeps the digest bit for bit.
* LLM fine-tuning (``finetune``) of the tests' tiny random Llama on the world's first 400
  human-graded training pairs, 3 epochs at lr 1e-3 on the CPU, seeds 0-2: each epoch's
  validation cross-entropy and accuracy (BENCHMARKS, "Every training loop on the engine").

Writes results/loops_reference.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from record import ROOT, machine, write_record

from prectr.encoder.teachers.adapt import HeadConfig, train_head
from prectr.encoder.teachers.finetune import FinetuneConfig, finetune
from prectr.encoder.teachers.labels import log_pairs
from prectr.encoder.teachers.load import load_teacher
from tests.encoder.teacher_models import tiny_llm_dir

SEEDS = (0, 1, 2)


def head_figures() -> dict[int, dict]:
    rng = np.random.default_rng(0)
    n, width = 1500, 960 + 384
    grades = rng.integers(0, 4, n)
    signal = rng.normal(size=width) * 0.05
    hidden = (rng.normal(size=(n, width)) + grades[:, None] * signal).astype(np.float32)
    queries = [f"q{i % 200}" for i in range(n)]
    out = {}
    for seed in SEEDS:
        torch.manual_seed(0)
        head, summary = train_head(hidden, grades, queries, HeadConfig(seed=seed))
        weights = b"".join(v.numpy().tobytes() for v in head.state_dict().values())
        out[seed] = {
            **{k: v for k, v in summary.items() if isinstance(v, int | float)},
            "weights_sha256": hashlib.sha256(weights).hexdigest()[:16],
        }
    return out


def finetune_figures(world: Path) -> dict[int, list[dict]]:
    pairs = log_pairs(world, "adapt", human_only=True, max_pairs=400)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        llm = tiny_llm_dir(Path(tmp))
        for seed in SEEDS:
            config = FinetuneConfig(epochs=3, lr=1e-3, batch_size=16, seed=seed, device="cpu")
            out[seed] = finetune(load_teacher(llm), pairs["query"].to_pylist(),
                                 pairs["title"].to_pylist(), pairs["relevance"].to_numpy(),
                                 Path(tmp) / f"tuned-{seed}", config)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "loops_reference.json")
    args = parser.parse_args()
    record = {"head": head_figures(), "finetune": finetune_figures(args.world),
              "world": str(args.world), "machine": machine()}  # fmt: skip
    for seed in SEEDS:
        head, last = record["head"][seed], record["finetune"][seed][-1]
        print(f"seed {seed}: head accuracy {head['valid_accuracy']:.3f}, cross-entropy "
              f"{head['valid_cross_entropy']:.3f}, weights {head['weights_sha256']}; fine-tuning "
              f"cross-entropy {last['logloss']:.3f}, accuracy {last['accuracy']:.3f}")  # fmt: skip
    write_record(args.out, record)


if __name__ == "__main__":
    main()
