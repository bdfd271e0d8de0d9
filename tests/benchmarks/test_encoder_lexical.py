"""benchmarks/encoder_lexical.py: each overlap feature's Spearman with the held-out grades, at
characters and at the student's pieces."""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import encoder_lexical

from prectr.encoder.baselines import FEATURES, overlap_features
from prectr.encoder.evaluate import held_out_sample
from prectr.encoder.pairs import read_pairs
from prectr.encoder.student import Student, StudentConfig, piece_overlap, save_student
from prectr.metrics.grades import spearman
from prectr.text.tokenizer import TextTokenizer


def test_each_feature_is_read_alone_on_every_graded_held_out_row(
    tiny_world, tmp_path, monkeypatch
) -> None:
    pairs = read_pairs(tiny_world)
    tokenizer = TextTokenizer.train(pairs.queries, pairs.titles, vocab_size=400)
    config = StudentConfig(vocab_size=tokenizer.vocab_size, dim=16, layers=1, heads=2, ff=32,
                           query_length=6, title_length=16)  # fmt: skip
    save_student(tmp_path / "student", Student(config), tokenizer)
    sample = held_out_sample(pairs)
    grades = sample.grade.astype(float)
    predictions = tmp_path / "predictions.parquet"  # as `prectr encoder evaluate` writes them
    pq.write_table(pa.table({"model": ["constant"] * grades.size + ["oracle"] * grades.size,
                             "grade": np.concatenate([grades, grades]),
                             "expected": np.concatenate([np.ones_like(grades), grades])}),
                   predictions)  # fmt: skip
    out = tmp_path / "lexical.json"
    monkeypatch.setattr(sys, "argv", ["encoder_lexical.py", "--log", str(tiny_world),
                                      "--student", str(tmp_path / "student"), "--predictions",
                                      str(predictions), "--out", str(out)])  # fmt: skip
    encoder_lexical.main()
    record = json.loads(out.read_text())  # strict JSON: an undefined figure is null, not NaN
    assert record["models"] == {"constant": None, "oracle": pytest.approx(1.0)}

    queries, titles = sample.texts(pairs)
    assert record["rows"] == sample.grade.size > 0
    assert list(record["string_features"]) == list(FEATURES)
    assert list(record["piece_columns"]) == list(encoder_lexical.PIECE_COLUMNS)
    k = FEATURES.index("char1_query_share")  # one column, recomputed row by row
    char1 = [overlap_features(queries[i], titles[i])[k] for i in sample.inverse]
    assert record["string_features"]["char1_query_share"] == pytest.approx(
        spearman(sample.grade, np.asarray(char1))
    )
    ids = (torch.from_numpy(tokenizer.encode(texts, n)) for texts, n in ((queries, 6),
                                                                        (titles, 16)))  # fmt: skip
    shares = piece_overlap(*ids, tokenizer.vocab_size).numpy()[sample.inverse, 0]
    assert record["piece_columns"]["piece_query_share"] == pytest.approx(
        spearman(sample.grade, shares)
    )
    assert record["string_features"]["char1_query_share"] > 0  # the world's grades are lexical
