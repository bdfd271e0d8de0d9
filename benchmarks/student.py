"""Student against teacher on the same held-out pools, the distillation ablation, and pairs/s.

Run (resumable: teacher outputs, labels and student runs are kept under --work; a killed run
continues where it stopped when run again):
    .venv/bin/prectr simulate --preset small --seed 0 --out /tmp/enc-q/world
    .venv/bin/python benchmarks/student.py --world /tmp/enc-q/world --work /tmp/enc-q/work
Prints a table and writes results/student.json.

Everything is scored on one held-out set, --eval-requests random test-day pools (the same for
every model and seed), whose pairs no teacher head, distillation or SFT step saw
(prectr.encoder.pairs), against the simulator's true grades: accuracy, Spearman, NDCG@10 per
pool. Per seed:

* teachers, zero-shot and adapted (an MLP head on their frozen hidden states) on --adapt-pairs
  human-graded training pairs: MiniLM and SmolLM2 side by side;
* the distillation teacher: MiniLM adapted on every human-graded training pair. It is also the
  "frozen MiniLM + MLP head on the human grades" baseline (the same model, reported once);
* the student distilled from that teacher's logits on every training pair, labelled or not
  (--distill-pairs samples fewer; --hidden-weight adds the hidden-state MSE, which keeps 1,536
  floats a pair), then fine-tuned on the human grades (SFT), and the same student after SFT
  alone, from scratch (one tokenizer for all). The teacher labels the pairs with
  ``prectr.encoder.teacher.label_pairs``, embedding each distinct text once.

Speed: pairs/s from text to grades of the adapted teachers (MiniLM without its memo of
embedded texts) and of the student on the same held-out pairs in this run, with the same
threads, taking turns over --rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder import cached_titles_rate
from held_out import add_piece_overlap_flag
from record import machine, write_record
from teacher import (
    METRICS,
    cached_outputs,
    fit_head,
    head_logits,
    mean_std,
    teachers,
)

from prectr.encoder.distill import EncoderRun, EncoderTrainConfig
from prectr.encoder.evaluate import grade_probabilities, held_out_sample
from prectr.encoder.pairs import read_pairs
from prectr.encoder.settings import student_config
from prectr.encoder.student import load_student
from prectr.encoder.teacher import AdaptedTeacher, GradeHead, label_pairs, log_pairs, softmax
from prectr.encoder.teachers.base import Teacher
from prectr.encoder.teachers.concat import ConcatTeacher
from prectr.text.tokenizer import TextTokenizer

ROOT = Path(__file__).resolve().parents[1]


def train_student(kind: str, args: argparse.Namespace, out: Path, seed: int, steps: int,
                  **sources: Path) -> dict:  # fmt: skip
    """One distill or SFT run (resumed when ``out`` holds a killed or finished one)."""
    config = EncoderTrainConfig(epochs=1, max_steps=steps, seed=seed,
                                hidden_weight=args.hidden_weight if kind == "distill" else 0.0,
                                eval_requests=args.eval_requests)  # fmt: skip
    resume = (out / "config.json").is_file()
    student = student_config(args.piece_overlap)
    return EncoderRun(kind, args.world, out, student, config, resume=resume,
                      **sources).fit()  # fmt: skip


def rate(encode: Callable[[], object], n: int, least_seconds: float = 0.5) -> float:
    """Pairs/s of ``encode`` (n pairs a call), repeated until ``least_seconds`` have passed."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < least_seconds or not calls:
        encode()
        calls += 1
    return n * calls / elapsed


def flops_per_pair(encode: Callable[[], object], n: int) -> float:
    """Floating-point operations of one ``encode`` call (n pairs) per pair, as PyTorch's
    ``FlopCounterMode`` counts them: matrix products and attention (two per multiply-add),
    not element-wise work. What bounds a pairs/s ratio where the products dominate."""
    with FlopCounterMode(display=False) as counter:
        encode()
    return counter.get_total_flops() / n


def side_by_side(heads: dict[str, tuple[str, GradeHead]], dtype: str, student_dir: Path, pairs,
                 sample, n: int, rounds: int) -> dict:  # fmt: skip
    """Pairs/s of each adapted teacher (a base teacher's name, or names joined by ``+`` side by
    side, and its head) and of the student on the same n held-out pairs, every text embedded on
    every call, and each one's :func:`flops_per_pair` from text (counted on a call of its own,
    before the warm-up)."""
    makers = teachers(dtype, memo_texts=0)

    def base_teacher(base: str) -> Teacher:
        parts = [makers[name]() for name in base.split("+")]
        return parts[0] if len(parts) == 1 else ConcatTeacher(parts)

    adapted = {name: AdaptedTeacher(base_teacher(base), base, head, {})
               for name, (base, head) in heads.items()}  # fmt: skip
    queries, titles = sample.texts(pairs)
    queries, titles = queries[:n], titles[:n]
    chosen = np.stack([sample.query, sample.title], 1)[:n]
    student, tokenizer = load_student(student_dir)
    contenders = {
        f"teacher {name}": lambda t=teacher: t.encode(queries, titles)
        for name, teacher in adapted.items()
    }

    def student_from_text() -> object:
        student.forget_scored()  # every text encoded on every call, as the teachers do
        return grade_probabilities(
            student, tokenizer, pairs.queries, pairs.titles, chosen[:, 0], chosen[:, 1]
        )

    contenders["student"] = student_from_text
    flops = {name: flops_per_pair(encode, len(chosen)) for name, encode in contenders.items()}
    for encode in contenders.values():  # warm-up
        encode()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    rates["student, title states cached"] = []
    for _ in range(rounds):
        for name, encode in contenders.items():
            rates[name].append(rate(encode, len(chosen)))
        rates["student, title states cached"].append(
            cached_titles_rate(student, tokenizer, pairs, chosen)
        )
    return {"pairs": len(chosen), "rounds": rates, "flops_per_pair": flops,
            "pairs_per_s": {name: statistics.median(r) for name, r in rates.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a simulated world")
    parser.add_argument("--work", type=Path, required=True, help="caches and student runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-requests", type=int, default=200, help="held-out pools")
    parser.add_argument("--teachers", nargs="+", choices=["minilm", "smollm2"],
                        default=["minilm", "smollm2"])  # fmt: skip
    parser.add_argument("--adapt-pairs", type=int, default=3000, help="for the teacher rows")
    parser.add_argument("--distill-pairs", type=int, default=0, help="0: every training pair")
    parser.add_argument("--hidden-weight", type=float, default=0.0, help="hidden-state MSE")
    parser.add_argument("--sft-steps", type=int, default=200, help="batches of 256")
    parser.add_argument("--vocab-size", type=int, default=8000)
    add_piece_overlap_flag(parser)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--speed-pairs", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "student.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    pairs = read_pairs(args.world)
    sample = held_out_sample(pairs, args.eval_requests)
    heldout = sample.table(pairs)
    rows: dict[str, list[dict]] = {}
    heads_for_speed: dict[str, tuple[str, GradeHead]] = {}
    adapt_pairs = log_pairs(args.world, "adapt", human_only=True, max_pairs=args.adapt_pairs)
    all_graded = log_pairs(args.world, "adapt", human_only=True)
    for name in args.teachers:
        teacher = teachers(args.dtype)[name]()
        _, train_hidden = cached_outputs(teacher, adapt_pairs, args.work)
        zero_shot, test_hidden = cached_outputs(teacher, heldout, args.work)
        rows[f"{name} zero-shot"] = [sample.score(softmax(zero_shot))]
        heads = [fit_head(train_hidden, adapt_pairs, 256, seed) for seed in args.seeds]
        rows[f"{name} adapted ({adapt_pairs.num_rows:,} pairs)"] = [
            sample.score(softmax(head_logits(head, test_hidden))) for head in heads
        ]
        heads_for_speed[f"{name} adapted"] = (name, heads[0])

    # the distillation teacher: frozen MiniLM + an MLP head on every human-graded training pair
    minilm = teachers(args.dtype)["minilm"]()
    _, graded_hidden = cached_outputs(minilm, all_graded, args.work)
    _, test_hidden = cached_outputs(minilm, heldout, args.work)
    distill_pairs = log_pairs(args.world, "adapt", max_pairs=args.distill_pairs or None)
    tokenizer = args.work / "tokenizer.json"
    if not tokenizer.is_file():
        TextTokenizer.train(*pairs.train_texts(), args.vocab_size).save(tokenizer)
    frozen = f"frozen MiniLM + MLP on all human grades ({all_graded.num_rows:,} pairs)"
    for name in (frozen, "student distill", "student distill + SFT", "student SFT only"):
        rows[name] = []
    for seed in args.seeds:
        head = fit_head(graded_hidden, all_graded, 256, seed)
        rows[frozen].append(sample.score(softmax(head_logits(head, test_hidden))))
        if seed == args.seeds[0]:
            heads_for_speed["minilm adapted on all grades"] = ("minilm", head)
        labels = args.work / f"labels-minilm-all-s{seed}"
        label_pairs(AdaptedTeacher(minilm, "minilm", head, {}), distill_pairs, labels,
                    part_size=16384, keep_hidden=args.hidden_weight > 0)  # fmt: skip
        run = args.work / f"s{seed}"
        distilled = train_student("distill", args, run / "distill", seed, 0, labels=labels,
                                  tokenizer=tokenizer)  # fmt: skip
        tuned = train_student("sft", args, run / "distill_sft", seed, args.sft_steps,
                              init=run / "distill" / "student")  # fmt: skip
        alone = train_student("sft", args, run / "sft", seed, args.sft_steps, tokenizer=tokenizer)
        for name, result in (("student distill", distilled), ("student distill + SFT", tuned),
                             ("student SFT only", alone)):  # fmt: skip
            if result["held_out"]["pairs"] != sample.grade.size:
                raise RuntimeError(f"{run}: scored on other pools than the teachers")
            rows[name].append(result["held_out"])
    student_dir = args.work / f"s{args.seeds[0]}" / "distill_sft" / "student"
    speed = side_by_side(heads_for_speed, args.dtype, student_dir, pairs, sample,
                         args.speed_pairs, args.rounds)  # fmt: skip

    summary = {name: mean_std(runs) for name, runs in rows.items()}
    teacher_row, student_row = summary[frozen], summary["student distill + SFT"]
    rates = speed["pairs_per_s"]
    targets = {
        "student / teacher ndcg@10": student_row["ndcg@10"][0] / teacher_row["ndcg@10"][0],
        "student / teacher accuracy": student_row["accuracy"][0] / teacher_row["accuracy"][0],
        **{f"student / {name} pairs/s": rates["student"] / rates[f"teacher {name}"]
           for name in heads_for_speed},
        **{f"distill + SFT - {other} {m}": student_row[m][0] - summary[other][m][0]
           for other in ("student SFT only", frozen) for m in METRICS},
        "seeds where distill + SFT beats SFT only on ndcg@10": sum(
            a["ndcg@10"] > b["ndcg@10"] for a, b in zip(rows["student distill + SFT"],
                                                       rows["student SFT only"], strict=True)),
    }  # fmt: skip

    print(f"held-out: {sample.grade.size:,} rows ({sample.query.size:,} distinct pairs) of "
          f"{args.eval_requests} test-day pools; seeds {args.seeds}")  # fmt: skip
    print(f"{'model':64s} " + " ".join(f"{m:>15s}" for m in METRICS))
    for name, row in summary.items():
        print(f"{name:64s} " + " ".join(f"{row[m][0]:8.3f} ± {row[m][1]:.3f}" for m in METRICS))
    print(f"pairs/s on the same {speed['pairs']} held-out pairs, {args.threads} threads: "
          + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))  # fmt: skip
    for name, value in targets.items():
        print(f"{name}: {value:.4g}")
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/student.py", *sys.argv[1:]]),
        "machine": machine(torch_threads=torch.get_num_threads()),
        "world": str(args.world), "seeds": args.seeds, "eval_requests": args.eval_requests,
        "heldout_rows": int(sample.grade.size), "heldout_pairs": int(sample.query.size),
        "adapt_pairs": adapt_pairs.num_rows, "all_graded_pairs": all_graded.num_rows,
        "distill_pairs": distill_pairs.num_rows, "hidden_weight": args.hidden_weight,
        "sft_steps": args.sft_steps,
        "quality": summary, "runs": rows, "speed": speed, "targets": targets,
    }  # fmt: skip
    write_record(args.out, record)


if __name__ == "__main__":
    main()
