"""Distillation that transfers (issue 18 item 6): distillation recipes side by side on one world.

Run (after `make demo`, or any world with teacher labels and a tokenizer):
    .venv/bin/python benchmarks/distill_transfer.py --world runs/demo/world \
        --labels runs/demo/labels --tokenizer runs/demo/encoder/tokenizer.json \
        --work /tmp/distill-transfer [--recipe "distill 10 epochs + 1.0 hidden MSE"] [--seed S]
Prints a table and writes results/distill_transfer.json.

Every recipe distils the default student from the same teacher labels with the same tokenizer
and seed, then fine-tunes it on the human grades for --sft-steps steps (SFT keeps the student of
the best validation ``select`` figure, by default macro-F1 + Spearman); SFT alone from scratch runs
the same steps. Validation is SFT's:
the human-graded pairs of the hashed top share of the training queries
(:mod:`prectr.encoder.distill`), on which the distilled students are scored too; test is
--eval-requests held-out pools (the same for every run), against the simulator's true grades.
The teacher labels are checked first: their expected grade against the simulator's true grade
of the pairs they label, and the scale of the teacher's hidden state; each distilled student's
Spearman with the teacher on those pairs says how far distillation fitted its targets.
The NDCG@10 of random scores on those pools (mean of 5 draws) is the chance level; a constant
score keeps the log's order (ties keep row order), so the majority grade's NDCG@10 is the
logging policy's, not chance.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import add_piece_overlap_flag
from record import machine, write_record

from prectr.data.schema import read_log
from prectr.encoder.distill import EncoderRun, EncoderTrainConfig
from prectr.encoder.evaluate import grade_metrics, grade_probabilities, held_out_sample
from prectr.encoder.pairs import LogPairs, TeacherLabels, read_teacher_labels
from prectr.encoder.settings import student_config
from prectr.encoder.student import load_student
from prectr.encoder.teachers.quality import softmax
from prectr.metrics import ndcg_at_k
from prectr.metrics.grades import spearman

# name: (epochs, hidden_weight); the first is `make demo`'s step count without the hidden MSE
RECIPES = {
    "distill 1 epoch": (1, 0.0),
    "distill 10 epochs": (10, 0.0),
    "distill 10 epochs + 0.1 hidden MSE": (10, 0.1),
    "distill 10 epochs + 1.0 hidden MSE": (10, 1.0),
}
FIGURES = ("accuracy", "macro_f1", "spearman", "ndcg@10")


def run(kind: str, args: argparse.Namespace, out: Path, init: Path | None = None,
        **settings) -> dict:  # fmt: skip
    """One resumable distillation or SFT run's metrics (SFT from ``init`` or from scratch)."""
    config = EncoderTrainConfig(seed=args.seed, eval_requests=args.eval_requests, **settings)
    labels = args.labels if kind == "distill" else None
    student = student_config(args.piece_overlap)
    return EncoderRun(kind, args.world, out, student, config, labels=labels, init=init,
                      tokenizer=args.tokenizer,
                      resume=(out / "config.json").is_file()).fit()  # fmt: skip


def validation_metrics(sft: EncoderRun, student_dir: Path) -> dict[str, float]:
    """A student's grade metrics on SFT's validation pairs."""
    student, tokenizer = load_student(student_dir)
    v = sft.valid
    probabilities = grade_probabilities(student, tokenizer, sft.pairs.queries, sft.pairs.titles,
                                        v.query, v.title)  # fmt: skip
    return grade_metrics(probabilities, v.target.numpy())


def true_grades(world: Path, pairs: LogPairs, labels: TeacherLabels) -> np.ndarray:
    """The simulator's true grade of each labelled pair (read for this diagnosis only)."""
    log = read_log(world)
    query = dict(zip(log.requests["request_id"].to_pylist(), log.requests["query"].to_pylist(),
                     strict=True))  # fmt: skip
    title = dict(zip(log.items["item_id"].to_pylist(), log.items["title"].to_pylist(),
                     strict=True))  # fmt: skip
    imp = log.impressions
    truth = {
        (q, t): g
        for q, t, g in zip([query[r] for r in imp["request_id"].to_pylist()],
                           [title[i] for i in imp["item_id"].to_pylist()],
                           imp["true_relevance"].to_pylist(), strict=True)
    }  # fmt: skip
    return np.array([truth[pairs.queries[q], pairs.titles[t]]
                     for q, t in zip(labels.query, labels.title, strict=True)])  # fmt: skip


def labels_diagnosis(args: argparse.Namespace, pairs: LogPairs) -> tuple[dict, TeacherLabels]:
    """The teacher labels' own quality against the true grades of the pairs they label, and the
    scale of the teacher's hidden state (its largest dimensions against the typical one)."""
    labels = read_teacher_labels(args.labels, pairs)
    probabilities = softmax(labels.logits)
    grade = true_grades(args.world, pairs, labels)
    out = {"pairs": int(grade.size), **grade_metrics(probabilities, grade)}
    if labels.hidden is not None:
        h = labels.hidden
        out["hidden"] = {"width": h.shape[1], "max_abs": float(np.abs(h).max()),
                         "mean_square": float((h**2).mean()),
                         "mean_variance": float(h.var(0).mean())}  # fmt: skip
    return out, labels


def teacher_agreement(student_dir: Path, pairs: LogPairs, labels: TeacherLabels) -> float:
    """Spearman between a student's and the teacher's expected grades on the labelled pairs
    (how far distillation has fitted its targets)."""
    student, tokenizer = load_student(student_dir)
    probabilities = grade_probabilities(student, tokenizer, pairs.queries, pairs.titles,
                                        labels.query, labels.title)  # fmt: skip
    grades = np.arange(probabilities.shape[1])
    return spearman(probabilities @ grades, softmax(labels.logits) @ grades)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--eval-requests", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                        help="the distillation recipes to run (default: all)")  # fmt: skip
    add_piece_overlap_flag(parser)
    parser.add_argument("--out", type=Path, default=Path("results/distill_transfer.json"))
    args = parser.parse_args()
    args.recipe = list(dict.fromkeys(args.recipe))
    if args.recipe != list(RECIPES) and args.out == parser.get_default("out"):
        parser.error(f"--recipe runs a subset: name its record with --out (not {args.out}, "
                     "the record of every recipe)")  # fmt: skip
    sft_settings = {"max_steps": args.sft_steps}
    rows, dirs = {}, {}
    for name in args.recipe:
        epochs, hidden = RECIPES[name]
        base = dirs[name] = args.work / f"recipe{list(RECIPES).index(name)}"
        distilled = run("distill", args, base / "distill", epochs=epochs, hidden_weight=hidden)
        tuned = run("sft", args, base / "sft", base / "distill" / "student", **sft_settings)
        rows[name] = {"steps": distilled["steps"], "held_out": distilled["held_out"]}
        rows[f"{name}, then SFT"] = {"steps": tuned["steps"], "validation": tuned["validation"],
                                     "held_out": tuned["held_out"]}  # fmt: skip
    scratch = run("sft", args, args.work / "scratch" / "sft", **sft_settings)
    rows["SFT alone (from scratch)"] = {"steps": scratch["steps"],
                                       "validation": scratch["validation"],
                                       "held_out": scratch["held_out"]}  # fmt: skip
    probe = EncoderRun("sft", args.world, args.work / "probe",
                       train=EncoderTrainConfig(seed=args.seed), tokenizer=args.tokenizer,
                       resume=(args.work / "probe" / "config.json").is_file())  # fmt: skip
    diagnosis, labels = labels_diagnosis(args, probe.pairs)
    print(f"teacher labels against the true grades of their {diagnosis['pairs']:,} pairs: "
          f"accuracy {diagnosis['accuracy']:.3f}, Spearman {diagnosis['spearman']:.3f}; "
          f"hidden state {diagnosis.get('hidden')}")  # fmt: skip
    for name in args.recipe:
        student = dirs[name] / "distill" / "student"
        rows[name]["validation"] = validation_metrics(probe, student)
        rows[name]["teacher_agreement"] = teacher_agreement(student, probe.pairs, labels)
    sample = held_out_sample(probe.pairs, args.eval_requests)
    rng = np.random.default_rng(args.seed)
    chance = float(np.mean([ndcg_at_k(sample.grade, rng.random(sample.grade.size),
                                      sample.request, 10) for _ in range(5)]))  # fmt: skip
    print(f"{'run':44s} {'steps':>5s}  valid F1/Spearman   test acc/F1/Spearman/NDCG@10")
    for name, row in rows.items():
        v, h = row["validation"], row["held_out"]
        agreement = row.get("teacher_agreement")
        agreement = "" if agreement is None else f"  (Spearman with the teacher {agreement:.3f})"
        print(f"{name:44s} {row['steps']:5d}  {v['macro_f1']:.3f} {v['spearman']:+.3f}    "
              + " ".join(f"{h[k]:+.3f}" for k in FIGURES)
              + agreement)  # fmt: skip
    print(f"chance NDCG@10 (random scores): {chance:.3f}")
    write_record(args.out, {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
                            "machine": machine(), "world": str(args.world),
                            "labels": str(args.labels), "sft_steps": args.sft_steps,
                            "seed": args.seed,
                            "teacher_labels": diagnosis, "chance_ndcg@10": chance,
                            "runs": rows})  # fmt: skip


if __name__ == "__main__":
    main()
