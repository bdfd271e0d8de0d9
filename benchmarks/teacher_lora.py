"""The LLM teacher adapted with LoRA against a head on its frozen states and against MiniLM.

Run (resumable: teacher outputs and the tuned model are cached under --work):
    .venv/bin/python benchmarks/teacher_lora.py --world runs/worlds/small-s0
Writes results/teacher_lora.json.

The human-graded pairs of the training days (``--adapt-pairs``, drawn with one seed) are split
by query: ``--choose-share`` of the queries form the **validation** pairs, on which the teacher
for the whole-log recipe is chosen (highest macro-F1; no adaptation sees them); the rest adapt
each teacher:

* ``smollm2 + mlp head``: an MLP head on SmolLM2-135M-Instruct's frozen hidden state
  (``prectr teacher adapt``);
* ``smollm2 lora``: SmolLM2 with rank-``--lora-rank`` LoRA adapters on every attention and MLP
  projection, trained on the grade digits' logits and merged (``prectr teacher finetune
  --lora-rank``), read zero-shot;
* ``minilm + mlp head``: the same head on all-MiniLM-L6-v2's pair features (the whole-log
  recipe's teacher until now).

Each is also scored once on the held-out test-day pools (``--eval-requests``), which no choice
reads. Speed: pairs/s of inference on the same held-out pairs (the LoRA teacher is merged, so
it runs as SmolLM2 does), and LoRA training pairs/s (the engine's wall time over the pairs and
epochs it trained).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from record import machine, write_record
from teacher import cached_outputs, fit_head, head_logits, pairs_per_s, teachers

from prectr.encoder.evaluate import held_out_metrics, held_out_sample
from prectr.encoder.pairs import read_pairs
from prectr.encoder.teacher import (
    CausalLMTeacher,
    FinetuneConfig,
    Teacher,
    finetune,
    log_pairs,
    softmax,
)

ROOT = Path(__file__).resolve().parents[1]
REPORTED = ("accuracy", "macro_f1", "spearman", "ndcg@10")


def split_by_query(pairs: pa.Table, share: float) -> tuple[pa.Table, pa.Table]:
    """(adaptation pairs, validation pairs): a query's pairs fall on one side, by a hash of its
    text (stable across runs and machines)."""
    queries = pairs["query"].to_pylist()
    valid = np.array([
        int(hashlib.sha1(q.encode()).hexdigest()[:8], 16) / 2**32 < share for q in queries
    ])  # fmt: skip
    return pairs.filter(pa.array(~valid)), pairs.filter(pa.array(valid))


def pair_metrics(probabilities: np.ndarray, pairs: pa.Table) -> dict[str, float]:
    """Held-out figures of grade distributions on graded pairs, each query a ranked list."""
    query = np.unique(pairs["query"].to_numpy(zero_copy_only=False), return_inverse=True)[1]
    found = held_out_metrics(probabilities, pairs["relevance"].to_numpy(), query)
    return {m: found[m] for m in REPORTED}


def lora_teacher(adapt: pa.Table, args: argparse.Namespace) -> tuple[Path, dict]:
    """SmolLM2 tuned with LoRA on ``adapt`` (cached under --work with its training record)."""
    out = args.work / f"smollm2-lora-r{args.lora_rank}-e{args.lora_epochs}-n{adapt.num_rows}"
    record = out.with_suffix(".json")
    if not record.is_file():
        teacher = CausalLMTeacher.smollm2(dtype="float32")
        config = FinetuneConfig(epochs=args.lora_epochs, lr=args.lora_lr, batch_size=16,
                                device="cpu", lora_rank=args.lora_rank,
                                lora_alpha=2.0 * args.lora_rank)  # fmt: skip
        started = time.perf_counter()
        history = finetune(teacher, adapt["query"].to_pylist(), adapt["title"].to_pylist(),
                           adapt["relevance"].to_numpy(), out, config, overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - started
        trained = round((1 - config.valid_share) * adapt.num_rows) * config.epochs
        record.write_text(json.dumps({"history": history, "seconds": seconds,
                                      "train_pairs_per_s": trained / seconds}))  # fmt: skip
    return out, json.loads(record.read_text())


def speed(made: dict[str, Teacher], heldout: pa.Table, n: int) -> dict[str, float]:
    """Pairs/s of each teacher's forward pass on the same ``n`` held-out pairs (best of two);
    MiniLM embeds every text of every pass (no memo), as a pairs/s from text needs."""
    queries, titles = heldout["query"].to_pylist()[:n], heldout["title"].to_pylist()[:n]
    out = {}
    for name, teacher in made.items():
        if name == "minilm":
            teacher = teachers("float32", memo_texts=0)["minilm"]()
        out[name] = pairs_per_s(teacher, queries, titles)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a simulated world")
    parser.add_argument("--work", type=Path, default=Path("runs/teacher-lora"), help="caches")
    parser.add_argument("--adapt-pairs", type=int, default=1500, help="human-graded pairs")
    parser.add_argument("--choose-share", type=float, default=0.2, help="validation queries")
    parser.add_argument("--eval-requests", type=int, default=20, help="test-day pools")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-epochs", type=int, default=2)
    parser.add_argument("--lora-lr", type=float, default=2e-4)
    parser.add_argument("--speed-pairs", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "teacher_lora.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    graded = log_pairs(args.world, "adapt", human_only=True, max_pairs=args.adapt_pairs)
    adapt, valid = split_by_query(graded, args.choose_share)
    sample = held_out_sample(read_pairs(args.world), args.eval_requests)
    heldout = sample.table(read_pairs(args.world))
    tuned_dir, tuning = lora_teacher(adapt, args)
    made = {
        "smollm2": teachers("bfloat16")["smollm2"](),
        "minilm": teachers("float32")["minilm"](),
        "smollm2 lora": CausalLMTeacher.from_pretrained(tuned_dir, dtype="bfloat16"),
    }
    results = {}
    for name, teacher in made.items():
        splits = {"adapt": adapt, "valid": valid, "test": heldout}
        on = {split: cached_outputs(teacher, table, args.work) for split, table in splits.items()}
        if name == "smollm2 lora":  # read zero-shot: the adapters are its adaptation
            variants = {name: {s: softmax(logits) for s, (logits, _) in on.items()}}
        else:
            head = fit_head(on["adapt"][1], adapt, 256, seed=0)
            variants = {f"{name} + mlp head": {
                s: softmax(head_logits(head, hidden)) for s, (_, hidden) in on.items()
            }}  # fmt: skip
        for variant, probabilities in variants.items():
            results[variant] = {
                "validation": pair_metrics(probabilities["valid"], valid),
                "test": {m: sample.score(probabilities["test"])[m] for m in REPORTED},
            }
    chosen = max(results, key=lambda v: results[v]["validation"]["macro_f1"])
    rates = speed(made, heldout, args.speed_pairs) if args.speed_pairs else {}
    print(f"adaptation {adapt.num_rows} pairs, validation {valid.num_rows} pairs "
          f"({args.choose_share:.0%} of queries), test {heldout.num_rows} pairs of "
          f"{args.eval_requests} test-day pools")  # fmt: skip
    print(f"{'teacher':22s} " + " ".join(f"{'valid ' + m:>16s}" for m in REPORTED)
          + " " + " ".join(f"{'test ' + m:>15s}" for m in REPORTED))  # fmt: skip
    for variant, r in results.items():
        print(f"{variant:22s} " + " ".join(f"{r['validation'][m]:16.3f}" for m in REPORTED)
              + " " + " ".join(f"{r['test'][m]:15.3f}" for m in REPORTED))  # fmt: skip
    print(f"chosen on validation macro-F1: {chosen}; inference pairs/s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
          + f"; LoRA training {tuning['train_pairs_per_s']:.2f} pairs/s")  # fmt: skip
    write_record(args.out, {
        "command": " ".join([".venv/bin/python", "benchmarks/teacher_lora.py", *sys.argv[1:]]),
        "machine": machine(torch_threads=torch.get_num_threads()),
        "world": str(args.world), "adapt_pairs": adapt.num_rows,
        "validation_pairs": valid.num_rows, "test_pairs": heldout.num_rows,
        "lora": {"rank": args.lora_rank, "epochs": args.lora_epochs, "lr": args.lora_lr,
                 **tuning},
        "teachers": results, "chosen_on_validation": chosen, "inference_pairs_per_s": rates,
    })  # fmt: skip


if __name__ == "__main__":
    main()
