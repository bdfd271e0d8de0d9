"""Conditional probability fusion: P(click | x) = sum_r P(click | rsl = r, x) P(rsl = r | x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fuse(click_logits: torch.Tensor, grade_logits: torch.Tensor) -> torch.Tensor:
    """The logit of P(click | x) from per-grade click logits and grade logits, both ``(B, G)``.

    Computed in log space: log p = logsumexp_r(log sigmoid(l_r) + log P(r)) and, because the
    grade probabilities sum to one, log(1 - p) = logsumexp_r(log sigmoid(-l_r) + log P(r)).
    Their difference is the fused logit, finite for any finite input: p is never exactly 0 or 1
    and nothing is divided.
    """
    log_grade = F.log_softmax(grade_logits, -1)
    log_click = torch.logsumexp(F.logsigmoid(click_logits) + log_grade, -1)
    log_skip = torch.logsumexp(F.logsigmoid(-click_logits) + log_grade, -1)
    return log_click - log_skip
