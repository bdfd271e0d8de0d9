"""benchmarks/encoder_paired.py: its statistics are `prectr encoder evaluate`'s, each row
weighted by its request's count in a resample."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import encoder_paired

from prectr.encoder.evaluate import grade_metrics
from prectr.metrics.grades import weighted_accuracy, weighted_macro_f1, weighted_spearman


def sample(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(4), n)
    probabilities[:, 1] = 0  # a grade never predicted nor true, as on a mapped 3-level scale
    probabilities /= probabilities.sum(1, keepdims=True)
    probabilities[:20] = probabilities[0]  # tied expected grades
    grade = rng.choice([0, 2, 3], n)
    request = np.sort(rng.integers(0, n // 3, n))
    _, request = np.unique(request, return_inverse=True)
    return probabilities, grade, request


FIGURES = {"macro_f1": weighted_macro_f1, "spearman": weighted_spearman,
           "accuracy": weighted_accuracy}  # fmt: skip


def test_with_every_request_once_the_figures_are_the_evaluations() -> None:
    probabilities, grade, request = sample()
    want = grade_metrics(probabilities, grade)
    predicted, expected = probabilities.argmax(1), probabilities @ np.arange(4)
    ones = np.ones((1, request.max() + 1))
    for name, figure in FIGURES.items():
        other = expected if name == "spearman" else predicted
        got = encoder_paired.statistic(figure, grade, other, request)(ones)[0]
        assert got == pytest.approx(want[name], abs=1e-12), name


def test_a_request_drawn_twice_counts_as_its_rows_written_twice() -> None:
    probabilities, grade, request = sample(seed=1)
    request = np.random.default_rng(3).permutation(request.max() + 1)[request]  # not sorted
    predicted, expected = probabilities.argmax(1), probabilities @ np.arange(4)
    weights = np.random.default_rng(2).integers(0, 3, (3, request.max() + 1)).astype(float)
    for name, figure in FIGURES.items():
        other = expected if name == "spearman" else predicted
        drawn = encoder_paired.statistic(figure, grade, other, request)(weights)
        for k, counts in enumerate(weights):
            rows = np.repeat(np.arange(grade.size), counts[request].astype(int))
            copied = encoder_paired.statistic(figure, grade[rows], other[rows], request[rows])
            assert drawn[k] == pytest.approx(copied(np.ones((1, request.max() + 1)))[0]), name
