"""benchmarks/encoder_paired.py: its statistics are `prectr encoder evaluate`'s, and a request
drawn k times counts as its rows written k times."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import encoder_paired

from prectr.encoder.evaluate import grade_metrics


def sample(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(4), n)
    probabilities[:, 1] = 0  # a grade never predicted nor true, as on a mapped 3-level scale
    probabilities /= probabilities.sum(1, keepdims=True)
    probabilities[:20] = probabilities[0]  # tied expected grades
    grade = rng.choice([0, 2, 3], n)
    request = np.sort(rng.integers(0, n // 3, n))
    _, request = np.unique(request, return_inverse=True)
    expected = probabilities @ np.arange(4)
    return probabilities, grade, probabilities.argmax(1), expected, request


def statistics(grade, predicted, expected, request):
    return {
        "macro_f1": encoder_paired.macro_f1(grade, predicted, request),
        "spearman": encoder_paired.spearman(grade, expected, request),
        "accuracy": encoder_paired.accuracy(grade, predicted, request),
    }


def test_with_every_request_once_the_figures_are_the_evaluations() -> None:
    probabilities, grade, predicted, expected, request = sample()
    want = grade_metrics(probabilities, grade)
    ones = np.ones((1, request.max() + 1))
    for name, statistic in statistics(grade, predicted, expected, request).items():
        assert statistic(ones)[0] == pytest.approx(want[name], abs=1e-12), name


def test_a_request_drawn_twice_counts_as_its_rows_written_twice() -> None:
    _, grade, predicted, expected, request = sample(seed=1)
    weights = np.random.default_rng(2).integers(0, 3, (3, request.max() + 1)).astype(float)
    drawn = statistics(grade, predicted, expected, request)
    for k, row in enumerate(weights):
        rows = np.repeat(np.arange(grade.size), row[request].astype(int))
        copied = statistics(grade[rows], predicted[rows], expected[rows], request[rows])
        for name in drawn:
            one = np.ones((1, request.max() + 1))
            assert drawn[name](weights)[k] == pytest.approx(copied[name](one)[0]), name
