import math

import numpy as np
import pytest
import torch

from prectr.losses.distill import distill_kl, hidden_mse, standardise_states


def test_kl_is_zero_for_equal_logits_and_hand_computed_otherwise() -> None:
    logits = torch.randn(6, 4)
    assert float(distill_kl(logits, logits, 3.0)) < 1e-6
    # teacher (log 3, 0, 0, 0) -> (0.5, 1/6, 1/6, 1/6) at T=1; student uniform
    teacher = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]])
    p = [0.5, 1 / 6, 1 / 6, 1 / 6]
    expected = sum(pi * math.log(pi / 0.25) for pi in p)
    assert math.isclose(float(distill_kl(torch.zeros(1, 4), teacher, 1.0)), expected, rel_tol=1e-5)


def test_temperature_softens_and_rescales() -> None:
    teacher = torch.tensor([[math.log(3.0) * 2, 0.0, 0.0, 0.0]])
    # at T=2 the teacher is the T=1 case above, and the KL is multiplied by T^2 = 4
    p = [0.5, 1 / 6, 1 / 6, 1 / 6]
    expected = 4 * sum(pi * math.log(pi / 0.25) for pi in p)
    assert math.isclose(float(distill_kl(torch.zeros(1, 4), teacher, 2.0)), expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        distill_kl(torch.zeros(1, 4), teacher, 0.0)


def test_gradient_reaches_the_student_only() -> None:
    student, teacher = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    distill_kl(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_hidden_mse_and_its_shape_check() -> None:
    assert float(hidden_mse(torch.ones(2, 3), torch.zeros(2, 3))) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        hidden_mse(torch.ones(2, 3), torch.zeros(2, 4))


def test_standardised_states_weigh_every_dimension_alike() -> None:
    rng = np.random.default_rng(0)
    hidden = np.c_[rng.normal(0, 0.01, 50), 137.0 + rng.normal(0, 3, 50), np.full(50, 9.0)]
    z = standardise_states(hidden)
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1, rtol=1e-4)
    assert (z[:, 2] == 0).all()  # a constant dimension carries nothing to match
