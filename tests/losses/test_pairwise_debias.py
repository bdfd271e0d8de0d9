import math

import pytest
import torch

from prectr.losses.pairwise_debias import pairwise_debias, truncation


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_pairwise_loss_equals_a_hand_computed_case() -> None:
    # d = 2 - [1, 5, -10] = [1, -3, 12]; clip 2 -> [1, -2, 12]; margin 1; the third pair is
    # ordered by more than truncate = 10 and dropped; the sum is divided by all 3 pairs
    positive = torch.tensor([2.0], requires_grad=True)
    negative = torch.tensor([[1.0, 5.0, -10.0]], requires_grad=True)
    loss = pairwise_debias(positive, negative, torch.tensor([0.5]), margin=1.0, clip=2.0,
                           truncate=10.0)  # fmt: skip
    expected = 0.5 * (softplus(0.0) + softplus(3.0)) / 3
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    loss.backward()
    # clipped (-3 < -2) and truncated pairs give no gradient; the first pulls the scores apart
    assert negative.grad[0, 1] == 0 and negative.grad[0, 2] == 0
    assert negative.grad[0, 0] > 0 and positive.grad[0] < 0


def test_weight_is_not_trained_and_no_pairs_cost_nothing() -> None:
    weight = torch.tensor([0.7, 0.2], requires_grad=True)
    loss = pairwise_debias(torch.zeros(2, requires_grad=True), torch.zeros(2, 3), weight)
    loss.backward()
    assert weight.grad is None or torch.equal(weight.grad, torch.zeros(2))
    assert float(pairwise_debias(torch.zeros(0), torch.zeros(0, 2), torch.zeros(0))) == 0.0


@pytest.mark.parametrize(("step", "value"), [(0, 4.0), (500, 2.5), (1000, 1.0), (5000, 1.0)])
def test_truncation_schedule_is_linear_then_flat(step: int, value: float) -> None:
    assert truncation(step, start=4.0, end=1.0, steps=1000) == pytest.approx(value)
    assert truncation(step, 4.0, 1.0, 0) == 1.0


def test_invalid_pairs_cost_nothing_and_are_not_counted() -> None:
    # the second positive has no partner: the loss is the first pair's alone, over one pair
    positive, negative = torch.tensor([2.0, 0.0]), torch.tensor([[1.0], [float("nan")]])
    valid = torch.tensor([[True], [False]])
    loss = pairwise_debias(positive, negative, torch.ones(2), margin=1.0, valid=valid)
    assert math.isclose(float(loss), softplus(0.0), rel_tol=1e-6)
    # under DDP the count of pairs is given (the step's, per process)
    halved = pairwise_debias(positive, negative, torch.ones(2), 1.0, valid=valid, pairs=2.0)
    assert math.isclose(float(halved), softplus(0.0) / 2, rel_tol=1e-6)
