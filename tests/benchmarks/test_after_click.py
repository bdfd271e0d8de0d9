"""benchmarks/after_click.py: the `above` design finds a planted lambda (1: clicks never stop
the user; 0.5) on a log whose ranker shows each item below every kind of configuration."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import after_click


def planted(after: float, n_requests: int = 20_000, seed: int = 0) -> after_click.ShownRows:
    """One query, 12 items of attraction 0.1-0.9 ranked at random into 3 slots each request
    (every configuration above an item is equally likely), DCM clicks with ``after``, no
    position bias but the stopping; days alternate."""
    rng = np.random.default_rng(seed)
    attraction = np.linspace(0.1, 0.9, 12)
    items = np.argsort(rng.random((n_requests, 12)), axis=1)[:, :3]
    clicks = np.zeros((n_requests, 3))
    go_on = np.ones(n_requests)
    for j in range(3):
        clicked = rng.random(n_requests) < go_on * attraction[items[:, j]]
        clicks[:, j] = clicked
        go_on = go_on * np.where(clicked, after, 1.0)
    rows = after_click.ShownRows.__new__(after_click.ShownRows)
    rows.request = np.repeat(np.arange(n_requests), 3)
    rows.position = np.tile(np.arange(1, 4), n_requests)
    rows.pair = items.ravel()
    rows.query = np.zeros(rows.pair.size, np.int64)
    rows.click = clicks.ravel()
    rows.day = rows.request % 4
    rows.n_requests = n_requests
    return rows


@pytest.mark.parametrize("after", [1.0, 0.5])
def test_the_above_design_finds_a_planted_lambda(after):
    rows = planted(after)
    found = after_click.lambda_from_above(rows, np.ones(after_click.K), np.ones(rows.n_requests))
    assert found == pytest.approx(after, abs=0.08)
