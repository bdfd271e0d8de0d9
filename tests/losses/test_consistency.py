import math

import torch
import torch.nn.functional as F

from prectr.losses.consistency import grade_cross_entropy, reference_kl


def test_cross_entropy_reads_only_labelled_rows() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    relevance = torch.tensor([0, -1, 3])
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([0, 3]))
    torch.testing.assert_close(grade_cross_entropy(logits, relevance), expected)
    # uniform logits, label 1: log 4
    value = grade_cross_entropy(torch.zeros(1, 4), torch.tensor([1]))
    assert math.isclose(float(value), math.log(4), rel_tol=1e-6)


def test_cross_entropy_without_labels_is_zero_with_a_gradient_path() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    value = grade_cross_entropy(logits, torch.tensor([-1, -1, -1]))
    assert float(value.detach()) == 0.0
    value.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 4))


def test_kl_to_the_reference_is_zero_when_equal_and_hand_computed_otherwise() -> None:
    logits = torch.randn(5, 4)
    assert float(reference_kl(logits, logits)) < 1e-6
    p = torch.tensor([[0.5, 0.5, 0.0 + 1e-12, 1e-12]])
    q = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    # KL(p || q) = 0.5 log 2 + 0.5 log 2 = log 2 (the tiny masses add ~0)
    value = reference_kl(torch.log(q), torch.log(p))
    assert math.isclose(float(value), math.log(2), rel_tol=1e-4)
