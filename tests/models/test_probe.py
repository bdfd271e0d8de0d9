"""The linear probe telling synthetic hard negatives from real low-grade candidates."""

from __future__ import annotations

import itertools

import pytest
import torch

from prectr.data.stream import BatchStream
from prectr.metrics.probe import probe_auc, synthetic_probe_auc
from tests.models.test_prectr import build


def test_probe_auc_is_a_half_for_one_distribution_and_one_for_two() -> None:
    torch.manual_seed(0)
    same = probe_auc(torch.randn(400, 8), torch.randn(400, 8))
    apart = probe_auc(torch.randn(400, 8) + 3.0, torch.randn(400, 8))
    assert abs(same - 0.5) < 0.1 and apart > 0.99


@pytest.mark.xfail(
    strict=True,
    reason="issue 16's probe target (<= 0.75) is not met on the tiny world: the mixed "
    "negatives keep a share of their click that a linear probe sees (0.82 after 10 steps, "
    "0.86 after the trainer's two stages)",
)
def test_a_linear_probe_barely_tells_synthetic_from_real_low_grade_embeddings(world) -> None:
    """Measured on this data after 10 steps: 0.82 for the mixed negatives at the default
    ``mix_max`` 0.1 (0.91 at 0.5, 0.39 at 0); noise after the ReLU (the old mechanism) on the
    same model and rows: 0.88. Trained in the trainer's two stages (a relevance epoch, a click
    epoch) instead of 10 steps: 0.86 (docs/fidelity.md, "The probe test on a model trained as
    the trainer trains it"). On `bench`'s trained V2 the default gives 0.64 (docs/fidelity.md,
    "Synthetic negatives nearer the real low-grade ones"). Strict: once the target is met here
    this fails, and the xfail goes."""
    model = build(world, debias_negatives="synthetic", debias_weight=0.03)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for batch in itertools.islice(world.train.epoch(), 10):
        optimiser.zero_grad()
        model.loss(batch, model(batch))["loss"].backward()
        optimiser.step()
    every = BatchStream(world.train.paths, world.train.collator, 256, shuffle=False, rows="all")
    value = synthetic_probe_auc(model, itertools.islice(every.epoch(), 8))
    assert model.training  # the probe leaves the model as it found it
    assert value <= 0.75
