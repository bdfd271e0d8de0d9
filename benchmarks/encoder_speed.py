"""Pairs/s of an adapted teacher and a student on the same held-out pairs of any log.

Run: .venv/bin/python benchmarks/encoder_speed.py --log LOG [--held-out SPLIT] \\
         --student RUN/student --teacher ADAPTED_TEACHER_DIR --out results/encoder_speed_X.json

From text to grades, every text embedded on every call (the teacher's memo of embedded texts
off), taking turns over --rounds on the first --pairs held-out rows (``prectr.encoder.pairs``),
with the same threads; and the two-tower student scoring against title states computed
beforehand, as a server with its catalogue's titles cached would; and the FLOPs a pair of
each from text (PyTorch's counter: matrix products and attention), the ratio that bounds the
pairs/s one where those dominate. The figures of
``benchmarks/student.py``'s speed test, for a log that is not a simulated world.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch
from held_out import add_log_flags, read_log_pairs
from record import machine, write_record
from student import side_by_side

from prectr.encoder.evaluate import held_out_sample
from prectr.encoder.teachers.adapt import AdaptedTeacher, base_spec
from prectr.encoder.teachers.load import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_log_flags(parser)
    parser.add_argument("--teacher", type=Path, required=True, help="an adapted teacher")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    teacher = load_teacher(args.teacher)
    if not isinstance(teacher, AdaptedTeacher):
        raise SystemExit(f"{args.teacher}: not an adapted teacher (prectr teacher adapt)")
    pairs = read_log_pairs(args)
    sample = held_out_sample(pairs)
    base = base_spec(teacher.base_spec)
    if any(part not in ("minilm", "smollm2") for part in base.split("+")):
        raise SystemExit(f"{args.teacher}: adapted on {base}; the speed test rebuilds a base "
                         "teacher from its name: minilm, smollm2 or both joined by +")  # fmt: skip
    speed = side_by_side({base: (base, teacher.head)}, teacher.dtype, args.student, pairs,
                         sample, args.pairs, args.rounds)  # fmt: skip
    rates, flops = speed["pairs_per_s"], speed["flops_per_pair"]
    student, teacher_name = rates["student"], f"teacher {base}"
    for name, value in rates.items():
        print(f"{name}: {value:,.0f} pairs/s ({value / rates[teacher_name]:.1f}x the "
              f"teacher; the student {student / value:.1f}x this)")  # fmt: skip
    for name, value in flops.items():
        print(f"{name}: {value / 1e6:,.1f} MFLOP a pair from text (the teacher "
              f"{flops[teacher_name] / value:.1f}x this)")  # fmt: skip
    write_record(args.out, {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "log": str(args.log),
        "held_out": args.held_out, "student": str(args.student), "teacher": str(args.teacher),
        "threads": args.threads, **speed, "machine": machine(),
    })  # fmt: skip


if __name__ == "__main__":
    main()
