"""Which teacher labels the whole log: heads on frozen states, LoRA, side by side, on validation.

Run (resumable: teacher outputs and the tuned model are cached under --work):
    .venv/bin/python benchmarks/teacher_lora.py --world runs/worlds/small-s0
Writes results/teacher_choice.json (the LoRA run of docs/fidelity.md wrote
results/teacher_lora.json, before the default moved).

The human-graded pairs of the training days (``--adapt-pairs``, drawn with one seed) are split
by query: ``--choose-share`` of the queries form the **validation** pairs, on which the teacher
for the whole-log recipe is chosen; the rest adapt each candidate (``--candidates``):

* ``smollm2``: an MLP head on SmolLM2-135M-Instruct's frozen hidden state (``prectr teacher
  adapt``);
* ``minilm``: the same head on all-MiniLM-L6-v2's pair features;
* ``smollm2+minilm``: the same head on both side by side (``make demo``'s teacher);
* ``smollm2 int8`` and ``smollm2 int8+minilm``: the same with SmolLM2 in int8 (``--dtype
  int8``) instead of bfloat16;
* ``smollm2 lora``: SmolLM2 with rank-``--lora-rank`` LoRA adapters on every attention and MLP
  projection, trained on the grade digits' logits and merged (``prectr teacher finetune
  --lora-rank``), read zero-shot.

**The choice** (validation pairs only): the candidate with the highest macro-F1 leads; each
other candidate's macro-F1 is compared with the leader's by a paired bootstrap over validation
queries (95% CI). Among the leader and the candidates whose CI reaches 0 (not shown worse), the
one with the most pairs/s is chosen: a whole log costs a teacher pass a pair, so where
validation cannot tell two teachers apart the cheaper labels the log.

Each is also scored once on the held-out test-day pools (``--eval-requests``), which no choice
reads. Speed: pairs/s on the same held-out pairs of what each runs when it labels (a head's
base teacher's hidden states, layers above the one read skipped; the merged LoRA teacher's
grade logits; MiniLM embedding every text, no memo), and LoRA training pairs/s (the engine's
wall time over the pairs and epochs it trained).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from record import machine, write_record
from teacher import cached_outputs, fit_head, head_logits, pairs_per_s, teachers

from prectr.encoder.evaluate import GRADES, held_out_metrics, held_out_sample
from prectr.encoder.pairs import read_pairs, validation_queries
from prectr.encoder.teacher import (
    CausalLMTeacher,
    ConcatTeacher,
    FinetuneConfig,
    Teacher,
    finetune,
    log_pairs,
    softmax,
)
from prectr.metrics.paired import Statistic, paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
REPORTED = ("accuracy", "macro_f1", "spearman", "ndcg@10")
CANDIDATES = ("smollm2", "minilm", "smollm2+minilm", "smollm2 lora", "smollm2 int8",
              "smollm2 int8+minilm")  # fmt: skip
PRECISION = {"smollm2": "bfloat16", "smollm2 int8": "int8", "minilm": "float32"}
"""Each teacher that a head reads, by its name in a candidate, and the precision it runs in."""


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


def macro_f1_statistic(probabilities: np.ndarray, pairs: pa.Table) -> Statistic:
    """Macro-F1 of the argmax grades under query weights ``(b, Q)`` (queries in sorted order):
    the macro-F1 of the resampled pairs, a query's pairs drawn together; a grade counts where it
    is true or predicted, as in :func:`prectr.encoder.evaluate.grade_metrics`."""
    query = np.unique(pairs["query"].to_numpy(zero_copy_only=False), return_inverse=True)[1]
    grade, predicted = pairs["relevance"].to_numpy(), probabilities.argmax(1)

    everywhere, n_queries = np.ones(grade.size, dtype=bool), int(query.max()) + 1

    def per_query(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:  # (Q, GRADES) counts
        return np.stack([np.bincount(query[rows & (labels == g)], minlength=n_queries)
                         for g in range(GRADES)], axis=1)  # fmt: skip

    true, hit = per_query(grade, everywhere), per_query(predicted, everywhere)
    both = per_query(grade, predicted == grade)

    def statistic(weights: np.ndarray) -> np.ndarray:
        tp, counted = weights @ both, weights @ (true + hit)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(counted > 0, 2 * tp / counted, np.nan)
        return np.nanmean(f1, axis=1)

    return statistic


def choose(valid_probabilities: dict[str, np.ndarray], valid: pa.Table,
           rates: dict[str, float]) -> tuple[str, dict]:  # fmt: skip
    """The teacher the module docstring's rule chooses, and each candidate's macro-F1 minus the
    leader's (paired bootstrap over the validation queries, 95% CI)."""
    f1 = {name: macro_f1_statistic(p, valid) for name, p in valid_probabilities.items()}
    n_queries = len(set(valid["query"].to_pylist()))
    leader = max(f1, key=lambda name: f1[name](np.ones((1, n_queries)))[0])
    against = {
        name: paired_bootstrap({"macro_f1": f1[leader]}, {"macro_f1": f1[name]}, n_queries)[
            "macro_f1"
        ].summary()
        for name in f1
        if name != leader
    }
    tied = [leader] + [name for name, d in against.items() if d["hi"] is not None and d["hi"] >= 0]
    chosen = max(tied, key=lambda name: rates[name])
    return chosen, {"leader": leader, "minus_leader": against, "not_shown_worse": tied}


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
        queries = adapt["query"].to_pylist()
        trained = int((~validation_queries(queries, config.valid_share)).sum()) * config.epochs
        record.write_text(json.dumps({"history": history, "seconds": seconds,
                                      "train_pairs_per_s": trained / seconds}))  # fmt: skip
    return out, json.loads(record.read_text())


def speed(made: dict[str, Teacher], candidates: list[str], heldout: pa.Table,
          n: int) -> dict[str, float]:  # fmt: skip
    """Pairs/s of what each candidate runs when it labels, on the same ``n`` held-out pairs
    (best of two passes, after a warm-up); MiniLM embeds every text of every pass (no memo), as
    a pairs/s from text needs."""
    queries, titles = heldout["query"].to_pylist()[:n], heldout["title"].to_pylist()[:n]
    fresh = dict(made)
    if "minilm" in made:  # timed from text: a copy that remembers no embedding
        fresh["minilm"] = teachers("float32", memo_texts=0)["minilm"]()
    out = {}
    for name in candidates:
        if name == "smollm2 lora":  # merged, read zero-shot: its grade logits
            out[name] = pairs_per_s(fresh[name].grade_logits, queries, titles)
        else:  # a head: its base's hidden states
            parts = [fresh[part] for part in name.split("+")]
            base = parts[0] if len(parts) == 1 else ConcatTeacher(parts)
            out[name] = pairs_per_s(base.hidden, queries, titles)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a simulated world")
    parser.add_argument("--work", type=Path, default=Path("runs/teacher-lora"), help="caches")
    parser.add_argument("--adapt-pairs", type=int, default=1500, help="human-graded pairs")
    parser.add_argument("--choose-share", type=float, default=0.2, help="validation queries")
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    parser.add_argument("--eval-requests", type=int, default=20, help="test-day pools")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-epochs", type=int, default=2)
    parser.add_argument("--lora-lr", type=float, default=2e-4)
    parser.add_argument("--speed-pairs", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "teacher_choice.json")
    args = parser.parse_args()
    if args.speed_pairs < 1:
        parser.error("--speed-pairs must be at least 1: the choice reads each teacher's pairs/s")
    args.work.mkdir(parents=True, exist_ok=True)

    graded = log_pairs(args.world, "adapt", human_only=True, max_pairs=args.adapt_pairs)
    adapt, valid = split_by_query(graded, args.choose_share)
    sample = held_out_sample(read_pairs(args.world), args.eval_requests)
    heldout = sample.table(read_pairs(args.world))
    splits = {"adapt": adapt, "valid": valid, "test": heldout}
    made: dict[str, Teacher] = {}
    for name in args.candidates:
        if name == "smollm2 lora":
            tuned_dir, tuning = lora_teacher(adapt, args)
            made[name] = CausalLMTeacher.from_pretrained(tuned_dir, dtype="bfloat16")
        for part in name.split("+") if name != "smollm2 lora" else []:
            if part not in made:  # each base loaded once, however many candidates share it
                made[part] = teachers(PRECISION[part])[part.split()[0]]()
    on = {name: {split: cached_outputs(teacher, table, args.work)
                 for split, table in splits.items()}
          for name, teacher in made.items()}  # fmt: skip
    probabilities: dict[str, dict[str, np.ndarray]] = {}
    for name in args.candidates:
        if name == "smollm2 lora":  # read zero-shot: the adapters are its adaptation
            probabilities[name] = {s: softmax(logits) for s, (logits, _) in on[name].items()}
            continue
        hidden = {split: np.concatenate([on[part][split][1] for part in name.split("+")], axis=1)
                  for split in splits}  # fmt: skip
        head = fit_head(hidden["adapt"], adapt, 256, seed=0)
        probabilities[name] = {s: softmax(head_logits(head, h)) for s, h in hidden.items()}
    results = {
        name: {"validation": pair_metrics(p["valid"], valid),
               "test": {m: sample.score(p["test"])[m] for m in REPORTED}}
        for name, p in probabilities.items()
    }  # fmt: skip
    rates = speed(made, args.candidates, heldout, args.speed_pairs)
    chosen, choice = choose({n: p["valid"] for n, p in probabilities.items()}, valid, rates)
    print(f"adaptation {adapt.num_rows} pairs, validation {valid.num_rows} pairs "
          f"({args.choose_share:.0%} of queries), test {heldout.num_rows} pairs of "
          f"{args.eval_requests} test-day pools")  # fmt: skip
    print(f"{'teacher':20s} " + " ".join(f"{'valid ' + m:>16s}" for m in REPORTED)
          + " " + " ".join(f"{'test ' + m:>15s}" for m in REPORTED) + "    pairs/s")  # fmt: skip
    for name, r in results.items():
        print(f"{name:20s} " + " ".join(f"{r['validation'][m]:16.3f}" for m in REPORTED)
              + " " + " ".join(f"{r['test'][m]:15.3f}" for m in REPORTED)
              + f" {rates[name]:10.1f}")  # fmt: skip
    for name, d in choice["minus_leader"].items():
        print(f"validation macro-F1, {name} - {choice['leader']}: {d['diff']:+.4f} "
              f"[{d['lo']:+.4f}, {d['hi']:+.4f}]")  # fmt: skip
    print(
        f"leader on validation macro-F1: {choice['leader']}; not shown worse: "
        f"{', '.join(choice['not_shown_worse'])}; chosen (the fastest of those): {chosen}"
    )
    record = {
        "command": shlex.join([".venv/bin/python", "benchmarks/teacher_lora.py", *sys.argv[1:]]),
        "machine": machine(torch_threads=torch.get_num_threads()),
        "world": str(args.world), "adapt_pairs": adapt.num_rows,
        "validation_pairs": valid.num_rows,
        "validation_queries": len(set(valid["query"].to_pylist())),
        "test_pairs": heldout.num_rows, "teachers": results, "pairs_per_s": rates,
        "choice": choice, "chosen_on_validation": chosen,
    }  # fmt: skip
    if "smollm2 lora" in args.candidates:
        record["lora"] = {"rank": args.lora_rank, "epochs": args.lora_epochs, "lr": args.lora_lr,
                          **tuning}  # fmt: skip
    write_record(args.out, record)


if __name__ == "__main__":
    main()
