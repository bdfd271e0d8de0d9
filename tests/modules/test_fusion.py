import math

import torch

from prectr.modules.fusion import fuse


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_fusion_equals_a_hand_computed_case() -> None:
    # P(click | r) = .1 .2 .5 .8, P(r) = .1 .2 .3 .4 -> P(click) = .01 + .04 + .15 + .32 = .52
    click = torch.tensor([[logit(0.1), logit(0.2), logit(0.5), logit(0.8)]])
    grades = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    torch.testing.assert_close(fuse(click, grades), torch.tensor([logit(0.52)]))


def test_fusion_with_one_certain_grade_is_that_grade_s_click_logit() -> None:
    click = torch.tensor([[-1.0, 0.5, 2.0, 3.0]])
    grades = torch.tensor([[-1e4, -1e4, 0.0, -1e4]])
    torch.testing.assert_close(fuse(click, grades), torch.tensor([2.0]))


def test_fusion_is_finite_for_extreme_inputs_and_its_gradient_too() -> None:
    click = torch.tensor([[80.0, 90.0, 100.0, 120.0], [-120.0, -100.0, -90.0, -80.0],
                          [-80.0, 0.0, 0.0, 80.0]], requires_grad=True)  # fmt: skip
    grades = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, -50.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0]], requires_grad=True)  # fmt: skip
    fused = fuse(click, grades)
    assert torch.isfinite(fused).all()
    assert fused[0] > 70 and fused[1] < -70  # saturated, yet a finite logit, never p = 0 or 1
    fused.sum().backward()
    assert torch.isfinite(click.grad).all() and torch.isfinite(grades.grad).all()


def test_fusion_lies_between_the_smallest_and_largest_grade_logit() -> None:
    torch.manual_seed(0)
    click, grades = torch.randn(256, 4) * 3, torch.randn(256, 4) * 3
    fused = fuse(click, grades)
    assert (fused >= click.min(1).values - 1e-5).all() and (
        fused <= click.max(1).values + 1e-5
    ).all()
