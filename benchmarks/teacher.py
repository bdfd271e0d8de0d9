"""Teacher quality against the simulator's true grades, zero-shot and adapted, and teacher speed.

Run (resumable: the teachers' outputs are cached under --work, so a killed run continues):
    .venv/bin/prectr simulate --preset small --seed 0 --out runs/worlds/small-s0
    .venv/bin/python benchmarks/teacher.py --world runs/worlds/small-s0
Prints a table and writes results/teacher.json.

Teachers: SmolLM2-135M-Instruct (hidden state pooled at two thirds of the depth, and, as an
ablation, at the final layer), all-MiniLM-L6-v2 (pair features of its embeddings), and both
(their hidden states side by side, one head over them). Each is
adapted with an MLP head and a linear head on the human grades of training-day pairs (one head
per seed), and judged as the student is (prectr.encoder.evaluate) on random test-day pools,
whose pairs no head saw, against true_relevance: accuracy of the most likely grade, Spearman
between expected and true grade, NDCG@10 per pool. Speed: pairs/s of SmolLM2 in float32 and
bfloat16 (and its states alone in bfloat16 and int8) and of MiniLM on the same pairs, side by
side in this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from record import machine, write_record

from prectr.encoder.evaluate import held_out_sample
from prectr.encoder.pairs import read_pairs
from prectr.encoder.teacher import (
    BiEncoderTeacher,
    CausalLMTeacher,
    GradeHead,
    HeadConfig,
    MiniLM,
    Teacher,
    label_pairs,
    labels_dir,
    labels_for,
    log_pairs,
    read_labels,
    softmax,
    train_head,
)

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("accuracy", "spearman", "ndcg@10")


def teachers(dtype: str, memo_texts: int = 200_000) -> dict[str, Callable[[], Teacher]]:
    """The teachers by name; ``memo_texts=0`` makes MiniLM embed every text of every call (what
    a pairs/s measurement from text needs)."""
    return {
        "smollm2": lambda: CausalLMTeacher.smollm2(dtype=dtype),
        "smollm2 (final layer)": lambda: CausalLMTeacher.smollm2(dtype=dtype, depth=1.0),
        "minilm": lambda: BiEncoderTeacher(MiniLM(), "minilm", memo_texts),
    }


def cached_outputs(teacher: Teacher, pairs, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Grade logits and hidden states of the pairs, labelled under ``work`` (resuming)."""
    out = labels_dir(work, teacher)
    label_pairs(teacher, pairs, out)
    return labels_for(pairs, read_labels(out))


def mean_std(rows: list[dict]) -> dict:
    return {m: [float(np.mean([r[m] for r in rows])), float(np.std([r[m] for r in rows]))]
            for m in METRICS}  # fmt: skip


def fit_head(train_hidden: np.ndarray, adapt_pairs: pa.Table, width: int, seed: int) -> GradeHead:
    """A head (``width``, 0: linear) fitted on the adaptation pairs' hidden states and human
    grades."""
    grades, queries = adapt_pairs["relevance"].to_numpy(), adapt_pairs["query"].to_pylist()
    return train_head(train_hidden, grades, queries, HeadConfig(hidden=width, seed=seed))[0]


@torch.no_grad()
def head_logits(head: GradeHead, hidden: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(hidden)).numpy()


def pairs_per_s(run: Callable[[list[str], list[str]], object], queries: list[str],
                titles: list[str]) -> float:  # fmt: skip
    """Pairs/s of ``run`` (a teacher's ``encode`` or ``hidden``) on these pairs: best of two
    passes, after a warm-up."""
    run(queries[:8], titles[:8])
    times = []
    for _ in range(2):
        started = time.perf_counter()
        run(queries, titles)
        times.append(time.perf_counter() - started)
    return len(queries) / min(times)


def side_by_side_speed(pairs, n: int) -> dict:
    """Pairs/s on the same n pairs (best of two passes each, after a warm-up) of SmolLM2 in
    float32 and bfloat16, of its hidden states alone in bfloat16 and in int8 (what an adapted
    teacher runs: the layers above the one read are skipped), and of MiniLM."""
    queries, titles = pairs["query"].to_pylist()[:n], pairs["title"].to_pylist()[:n]
    fast = teachers("bfloat16")["smollm2"]()
    runs = {
        "smollm2 float32": teachers("float32")["smollm2"]().encode,
        "smollm2 bfloat16": fast.encode,
        "smollm2 bfloat16 states only": fast.hidden,
        "smollm2 int8 states only": teachers("int8")["smollm2"]().hidden,
        "minilm": teachers("float32", memo_texts=0)["minilm"]().encode,
    }
    out = {name: pairs_per_s(run, queries, titles) for name, run in runs.items()}
    out["bfloat16 speed-up"] = out["smollm2 bfloat16"] / out["smollm2 float32"]
    out["states-only speed-up"] = out["smollm2 bfloat16 states only"] / out["smollm2 bfloat16"]
    out["int8 over bfloat16, states only"] = (
        out["smollm2 int8 states only"] / out["smollm2 bfloat16 states only"]
    )
    out["minilm over smollm2 bfloat16"] = out["minilm"] / out["smollm2 bfloat16"]
    return out


def print_speed(speed: dict, n: int) -> None:
    print(f"pairs/s on the same {n} held-out pairs: "
          + ", ".join(f"{k} {v:.2f}" for k, v in speed.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a simulated world")
    parser.add_argument("--work", type=Path, default=Path("runs/teacher-bench"), help="caches")
    parser.add_argument("--adapt-pairs", type=int, default=1500, help="human-graded pairs")
    parser.add_argument("--eval-requests", type=int, default=20, help="test-day pools")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "int8"], default="bfloat16")
    parser.add_argument("--speed-pairs", type=int, default=128, help="0: skip the speed test")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="the speed test alone (written to results/teacher_speed.json)",
    )
    parser.add_argument("--teachers", nargs="+", choices=list(teachers("float32")),
                        default=list(teachers("float32")))  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: results/teacher.json")
    args = parser.parse_args()
    if args.speed_only:
        speed_only(args)
        return

    adapt_pairs = log_pairs(args.world, "adapt", human_only=True, max_pairs=args.adapt_pairs)
    pairs = read_pairs(args.world)
    sample = held_out_sample(pairs, args.eval_requests)
    heldout = sample.table(pairs)
    features = {}
    for name in args.teachers:
        teacher = teachers(args.dtype)[name]()
        _, train_hidden = cached_outputs(teacher, adapt_pairs, args.work)
        zero_shot, test_hidden = cached_outputs(teacher, heldout, args.work)
        features[name] = (train_hidden, test_hidden, sample.score(softmax(zero_shot)))
    if {"smollm2", "minilm"} <= features.keys():
        (a_train, a_test, *_), (b_train, b_test, *_) = features["smollm2"], features["minilm"]
        features["smollm2 + minilm"] = (np.hstack([a_train, b_train]), np.hstack([a_test, b_test]),
                                        None)  # fmt: skip
    results = {}
    for name, (train_hidden, test_hidden, zero_shot) in features.items():
        row = {"zero-shot": zero_shot}
        for head_name, width in (("mlp head", 256), ("linear head", 0)):
            heads = [fit_head(train_hidden, adapt_pairs, width, seed) for seed in args.seeds]
            row[head_name] = mean_std(
                [sample.score(softmax(head_logits(head, test_hidden))) for head in heads]
            )
        results[name] = row
    speed = side_by_side_speed(heldout, args.speed_pairs) if args.speed_pairs else None

    print(f"held-out: {heldout.num_rows} distinct pairs of {args.eval_requests} test-day pools; "
          f"adaptation: {adapt_pairs.num_rows} human-graded pairs; seeds {args.seeds}")  # fmt: skip
    print(f"{'teacher':24s} {'variant':12s} " + " ".join(f"{m:>15s}" for m in METRICS))
    for name, row in results.items():
        zero = row["zero-shot"]
        cells = " ".join(f"{zero[m]:15.3f}" if zero else f"{'-':>15s}" for m in METRICS)
        print(f"{name:24s} {'zero-shot':12s} {cells}")
        for head_name in ("mlp head", "linear head"):
            cells = " ".join(f"{row[head_name][m][0]:8.3f} ± {row[head_name][m][1]:.3f}"
                             for m in METRICS)  # fmt: skip
            print(f"{'':24s} {head_name:12s} {cells}")
    if speed:
        print_speed(speed, args.speed_pairs)
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/teacher.py", *sys.argv[1:]]),
        "machine": machine(torch_threads=torch.get_num_threads()),
        "world": str(args.world), "dtype": args.dtype, "seeds": args.seeds,
        "adapt_pairs": adapt_pairs.num_rows, "heldout_pairs": heldout.num_rows,
        "heldout_requests": args.eval_requests, "teachers": results, "pairs_per_s": speed,
    }  # fmt: skip
    write_record(args.out or ROOT / "results" / "teacher.json", record)


def speed_only(args: argparse.Namespace) -> None:
    """The side-by-side speed test on held-out pairs of the world, alone."""
    pairs = read_pairs(args.world)
    heldout = held_out_sample(pairs, args.eval_requests).table(pairs)
    speed = side_by_side_speed(heldout, args.speed_pairs)
    print_speed(speed, args.speed_pairs)
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/teacher.py", *sys.argv[1:]]),
        "machine": machine(torch_threads=torch.get_num_threads()),
        "world": str(args.world), "speed_pairs": args.speed_pairs, "pairs_per_s": speed,
    }  # fmt: skip
    write_record(args.out or ROOT / "results" / "teacher_speed.json", record)


if __name__ == "__main__":
    main()
