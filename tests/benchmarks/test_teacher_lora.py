"""benchmarks/teacher_lora.py: the validation pairs the teacher is chosen on."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prectr.encoder.evaluate import grade_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import teacher_lora


def test_a_query_falls_on_one_side_and_the_share_holds():
    queries = [f"query {i % 400}" for i in range(2000)]
    pairs = pa.table({"query": queries, "title": [f"t{i}" for i in range(2000)],
                      "relevance": np.zeros(2000, np.int8)})  # fmt: skip
    adapt, valid = teacher_lora.split_by_query(pairs, 0.2)
    assert adapt.num_rows + valid.num_rows == 2000
    assert not set(adapt["query"].to_pylist()) & set(valid["query"].to_pylist())
    assert 0.15 < len(set(valid["query"].to_pylist())) / 400 < 0.25
    again = teacher_lora.split_by_query(pairs.slice(1000), 0.2)[1]  # by text, not by row
    assert set(again["query"].to_pylist()) == set(valid["query"].to_pylist())


def _graded(n_queries: int = 60, per_query: int = 8, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    return pa.table({"query": [f"q{i // per_query:03d}" for i in range(n)],
                     "title": [f"t{i}" for i in range(n)],
                     "relevance": rng.integers(0, 4, n).astype(np.int8)})  # fmt: skip


def _noisy(grades: np.ndarray, right: float, seed: int) -> np.ndarray:
    """Grade distributions whose argmax is the true grade on about ``right`` of the rows."""
    rng = np.random.default_rng(seed)
    predicted = np.where(rng.random(grades.size) < right, grades, rng.integers(0, 4, grades.size))
    return np.eye(4, dtype=np.float32)[predicted] * 0.7 + 0.075


def test_macro_f1_under_query_weights_is_the_macro_f1_of_the_resampled_pairs():
    pairs = _graded()
    probabilities = _noisy(pairs["relevance"].to_numpy(), 0.6, seed=1)
    statistic = teacher_lora.macro_f1_statistic(probabilities, pairs)
    whole = grade_metrics(probabilities, pairs["relevance"].to_numpy())["macro_f1"]
    assert statistic(np.ones((1, 60)))[0] == pytest.approx(whole)
    weights = np.random.default_rng(2).integers(0, 3, 60)  # query i drawn weights[i] times
    rows = np.arange(480).reshape(60, 8)  # query i holds rows 8i to 8i + 7
    drawn = np.concatenate([np.tile(rows[q], w) for q, w in enumerate(weights)])
    resampled = grade_metrics(probabilities[drawn], pairs["relevance"].to_numpy()[drawn])
    assert statistic(weights[None].astype(float))[0] == pytest.approx(resampled["macro_f1"])


def test_the_fastest_teacher_not_shown_worse_is_chosen():
    pairs = _graded(n_queries=300)
    grades = pairs["relevance"].to_numpy()
    probabilities = {"slow": _noisy(grades, 0.8, 1), "fast twin": _noisy(grades, 0.79, 2),
                     "fast and poor": _noisy(grades, 0.3, 3)}  # fmt: skip
    rates = {"slow": 10.0, "fast twin": 100.0, "fast and poor": 1000.0}
    chosen, choice = teacher_lora.choose(probabilities, pairs, rates)
    assert choice["leader"] == "slow" and chosen == "fast twin"
    assert choice["minus_leader"]["fast and poor"]["hi"] < 0
    assert choice["not_shown_worse"] == ["slow", "fast twin"]
    rates["fast twin"] = 1.0  # the leader itself when it is the fastest of those not worse
    assert teacher_lora.choose(probabilities, pairs, rates)[0] == "slow"
