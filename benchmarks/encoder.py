"""The distilled student: held-out quality, pairs/s, and what it costs PRECTR-V2's training.

Run: .venv/bin/python benchmarks/encoder.py --world runs/worlds/bench-s0 \\
         --students runs/encoder/bench/distill_sft/student runs/encoder/bench/sft/student \\
         --configs configs/dnn_bench.yaml configs/prectr_v2_bench.yaml \\
             configs/prectr_v2_student_bench.yaml configs/prectr_v2_student_frozen_bench.yaml \\
         --student runs/encoder/bench/sft/student

Four parts, each printed and written to results/encoder_<world>.json with the command:

* quality of each ``--students`` directory on the world's held-out test day (accuracy, Spearman,
  NDCG@10 against the simulator's true grades; ``--eval-requests`` pools drawn at random), e.g.
  distillation + SFT against SFT alone;
* pairs/s of each student on CPU from text to grade distribution (tokenisation included), on
  held-out pairs that are all distinct (no batch deduplication helps), taking turns over
  ``--rounds``; a two-tower student is also timed with its title states precomputed (serving);
* training throughput of ``--configs`` side by side (benchmarks/throughput.py's turns), the
  first one the baseline, with ``--student`` overriding the configs' student directory;
* the arithmetic limit: the student's training FLOPs per sample in a real PRECTR-V2 batch
  (counted by ``torch.utils.flop_counter``, forward and backward, after the batch's distinct
  pairs are found) against the machine's measured fp32 matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine, write_record
from throughput import Contender

from prectr.data.chunks import LogChunks
from prectr.encoder.evaluate import evaluate_held_out, grade_probabilities
from prectr.encoder.pairs import LogPairs, read_pairs
from prectr.encoder.student import load_student, piece_overlap
from prectr.modules.text import StudentText

ROOT = Path(__file__).resolve().parents[1]


def quality(students: list[Path], pairs: LogPairs, requests: int) -> dict[str, dict]:
    out = {}
    for directory in students:
        student, tokenizer = load_student(directory)
        out[str(directory)] = evaluate_held_out(student, tokenizer, pairs, requests, seed=0)
    return out


def speed(students: list[Path], pairs: LogPairs, n: int, batch: int, rounds: int) -> dict:
    """Pairs/s from text to grade distribution, the students taking turns."""
    rows = pairs.held_out
    distinct = np.unique(np.stack([rows["query"].to_numpy(), rows["title"].to_numpy()], 1), axis=0)
    chosen = distinct[np.random.default_rng(0).permutation(len(distinct))[:n]]
    loaded = {str(d): load_student(d) for d in students}
    rates: dict[str, list[float]] = {name: [] for name in loaded}
    cached: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, (student, tokenizer) in loaded.items():
            student.forget_scored()  # every text encoded afresh, round after round
            started = time.perf_counter()
            grade_probabilities(student, tokenizer, pairs.queries, pairs.titles, chosen[:, 0],
                                chosen[:, 1], batch)  # fmt: skip
            rates[name].append(len(chosen) / (time.perf_counter() - started))
            if student.interaction is not None:
                cached.setdefault(name, []).append(
                    cached_titles_rate(student, tokenizer, pairs, chosen)
                )
    out = {name: {"pairs_per_s": statistics.median(r), "rounds": r, "mode":
                  loaded[name][0].config.mode} for name, r in rates.items()}  # fmt: skip
    for name, r in cached.items():
        out[name]["pairs_per_s_cached_titles"] = statistics.median(r)
    return out


@torch.no_grad()
def cached_titles_rate(student, tokenizer, pairs: LogPairs, chosen: np.ndarray) -> float:
    """Two-tower serving: title states precomputed, each request encodes its query only."""
    c = student.config
    titles = torch.from_numpy(tokenizer.encode([pairs.titles[i] for i in chosen[:, 1]],
                                               c.title_length))  # fmt: skip
    states = student.eval().title_states(titles)
    student.forget_scored()  # the queries encoded afresh, as a new request's would be
    started = time.perf_counter()
    q = torch.from_numpy(tokenizer.encode([pairs.queries[i] for i in chosen[:, 0]],
                                          c.query_length))  # fmt: skip
    query = student.query_states(q)
    overlap = piece_overlap(q, titles, c.vocab_size) if c.piece_overlap else None
    torch.softmax(student.head(student.pair_from_states(query, states, overlap)), -1)
    return len(chosen) / (time.perf_counter() - started)


def matmul_rate(dim: int, ff: int, rows: int = 65_536, repeats: int = 10) -> float:
    """Measured fp32 FLOP/s of the student's largest matmul shape (rows x dim @ dim x ff)."""
    a, b = torch.randn(rows, dim), torch.randn(dim, ff)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * dim * ff * repeats / (time.perf_counter() - started)


def arithmetic_limit(contender: Contender) -> dict[str, float]:
    """The student's training FLOPs per exposed sample of a real batch, and the samples/s the
    measured matmul rate would allow if the student alone ran at that rate."""
    student = contender.model.rsl.text.text_encoder
    batch = contender.batches[0]
    queries, titles = batch.sequences["query_pieces"], batch.sequences["title_pieces"]
    with FlopCounterMode(display=False) as counter:
        student.pair_state(queries, titles).sum().backward()
    samples = int(batch.exposed.sum())
    flops = counter.get_total_flops() / samples
    rate = matmul_rate(student.config.dim, student.config.ff)
    pairs = torch.cat([queries, titles], 1)
    return {
        "encoder_train_flops_per_sample": flops,
        "matmul_flops_per_s": rate,
        "limit_samples_per_s": rate / flops,
        "rows_per_batch": len(batch),
        "distinct_pairs_per_batch": int(torch.unique(pairs, dim=0).shape[0]),
        "exposed_per_batch": samples,
    }


def report_students(args: argparse.Namespace, result: dict) -> None:
    pairs = read_pairs(args.world)
    result["quality"] = quality(args.students, pairs, args.eval_requests)
    print(f"{'student':<48} {'accuracy':>9} {'spearman':>9} {'ndcg@10':>8}")
    for name, m in result["quality"].items():
        print(f"{name:<48} {m['accuracy']:>9.4f} {m['spearman']:>9.4f} {m['ndcg@10']:>8.4f}")
    result["speed"] = speed(args.students, pairs, args.speed_pairs, args.batch_size, args.rounds)
    for name, s in result["speed"].items():
        extra = s.get("pairs_per_s_cached_titles")
        cached = f", {extra:,.0f} with cached titles" if extra else ""
        print(f"{name:<48} {s['mode']:>9} {s['pairs_per_s']:>10,.0f} pairs/s{cached}")


def report_training(args: argparse.Namespace, result: dict) -> None:
    overrides = []
    if args.student:
        overrides = [f"model_params.student={args.student}", f"features.student={args.student}"]
    with tempfile.TemporaryDirectory() as scratch, LogChunks(args.world) as log:
        contenders = [
            Contender(c.stem, c, log, Path(scratch), args.rounds * (args.warmup + args.steps),
                      args.threads, overrides if "student" in c.stem else [])
            for c in args.configs
        ]  # fmt: skip
        for _ in range(args.rounds):  # each turn on batches no turn before it took
            for contender in contenders:
                contender.turn(args.steps, args.warmup)
    base = statistics.median(contenders[0].rates)
    result["training"] = {
        c.name: {"samples_per_s": statistics.median(c.rates), "rounds": c.rates,
                 "ratio_to_first": statistics.median(c.rates) / base}
        for c in contenders
    }  # fmt: skip
    for name, row in result["training"].items():
        print(f"{name:<48} {row['samples_per_s']:>10,.0f} samples/s "
              f"({row['ratio_to_first']:.3f} of {contenders[0].name})")  # fmt: skip
    texts = [(c, getattr(getattr(c.model, "rsl", None), "text", None)) for c in contenders]
    trained = [c for c, text in texts if isinstance(text, StudentText) and not text.frozen]
    if not trained:
        return
    limit = arithmetic_limit(trained[0])
    measured = result["training"][trained[0].name]["samples_per_s"]
    limit |= {"measured_samples_per_s": measured,
              "share_of_limit": measured / limit["limit_samples_per_s"]}  # fmt: skip
    result["arithmetic_limit"] = limit
    print(f"student training: {limit['encoder_train_flops_per_sample'] / 1e6:,.1f} MFLOP per "
          f"sample, matmul {limit['matmul_flops_per_s'] / 1e9:,.1f} GFLOP/s -> limit "
          f"{limit['limit_samples_per_s']:,.0f} samples/s; measured {measured:,.0f} "
          f"({limit['share_of_limit']:.0%})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--students", nargs="*", type=Path, default=[])
    parser.add_argument("--configs", nargs="*", type=Path, default=[])
    parser.add_argument("--student", type=Path, help="the student directory the configs read")
    parser.add_argument("--eval-requests", type=int, default=500)
    parser.add_argument("--speed-pairs", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1024, help="pairs per scoring call")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {"command": " ".join(["python", "benchmarks/encoder.py", *sys.argv[1:]])}
    if args.students:
        report_students(args, result)
    if args.configs:
        report_training(args, result)
    result["machine"] = machine(threads=args.threads)
    out = ROOT / "results" / f"encoder_{args.world.name}{'_' + args.tag if args.tag else ''}.json"
    write_record(out, result)


if __name__ == "__main__":
    main()
