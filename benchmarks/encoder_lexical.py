"""How much of a graded set's order string overlap tells, at characters and at the student's pieces.

Run: .venv/bin/python benchmarks/encoder_lexical.py --log LOG [--held-out SPLIT] [--grade-map M] \\
         --student RUN/student [--predictions P.parquet] --out results/encoder_lexical_X.json

On every graded held-out row (``prectr.encoder.evaluate.held_out_sample``), the Spearman
correlation of the grade with each feature alone: the overlap baseline's string features
(``prectr.encoder.baselines.FEATURES``: character 1-3-grams, words, containment, lengths) and
the student's piece-overlap columns (``prectr.encoder.student.piece_overlap``, on the pieces
its tokenizer gives the texts, cut at its piece limits: what the student reads). Beside them,
with ``--predictions`` (``prectr encoder evaluate --predictions``), each model's Spearman on its
rows. A set whose grades follow character overlap more closely than piece overlap is one where
the student's lexical columns see less than the baseline does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from held_out import add_log_flags, read_log_pairs
from record import machine, write_record

from prectr.encoder.baselines import FEATURES, overlap_features
from prectr.encoder.evaluate import held_out_sample
from prectr.encoder.student import load_student, piece_overlap
from prectr.metrics.grades import spearman

PIECE_COLUMNS = (
    "piece_query_share", "piece_title_share", "piece_pair_query_share", "piece_pair_title_share",
    "log_query_pieces", "log_title_pieces",
)  # fmt: skip


def defined(value: float) -> float | None:
    """``value``, or None (JSON's null) where it is nan: undefined for a constant side."""
    return None if np.isnan(value) else float(value)


def feature_spearman(grade: np.ndarray, features: np.ndarray, names: tuple[str, ...]) -> dict:
    """Spearman of ``grade`` ``(n,)`` with each column of ``features`` ``(n, k)`` alone (None
    where a column is constant)."""
    return {name: defined(spearman(grade, features[:, i])) for i, name in enumerate(names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_log_flags(parser)
    parser.add_argument("--predictions", type=Path, help="prectr encoder evaluate --predictions")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    pairs = read_log_pairs(args)
    sample = held_out_sample(pairs)
    queries, titles = sample.texts(pairs)
    strings = np.stack([overlap_features(q, t) for q, t in zip(queries, titles, strict=True)])
    student, tokenizer = load_student(args.student)
    c = student.config
    q_ids = torch.from_numpy(tokenizer.encode(queries, c.query_length))
    t_ids = torch.from_numpy(tokenizer.encode(titles, c.title_length))
    pieces = piece_overlap(q_ids, t_ids, c.vocab_size).numpy()
    rows, grade = sample.inverse, sample.grade
    record = {
        "rows": int(grade.size),
        "string_features": feature_spearman(grade, strings[rows], FEATURES),
        "piece_columns": feature_spearman(grade, pieces[rows], PIECE_COLUMNS),
    }
    if args.predictions:
        table = pq.read_table(args.predictions, columns=["model", "grade", "expected"])
        frame = table.to_pandas()
        record["models"] = {
            str(name): defined(spearman(group["grade"].to_numpy(), group["expected"].to_numpy()))
            for name, group in frame.groupby("model", sort=False)
        }
    for part in ("string_features", "piece_columns", "models"):
        for name, value in record.get(part, {}).items():
            shown = "undefined (constant)" if value is None else f"{value:+.3f}"
            print(f"{part:>15}  {name:<28} Spearman {shown}")
    write_record(args.out, {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "log": str(args.log),
        "held_out": args.held_out, "student": str(args.student), **record, "machine": machine(),
    })  # fmt: skip


if __name__ == "__main__":
    main()
