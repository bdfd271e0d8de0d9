"""Semantic consistency regularisation: keep the RSL output faithful while clicks train it.

Two forms: cross-entropy to the observed human grades on the labelled pairs of a batch (the
default: it needs no stage 1 and keeps learning from labels), or the KL divergence from the
RSL module as it was at the end of stage 1 to the current one, on every pair (it anchors the
whole distribution, labelled or not, and needs a stage 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grade_cross_entropy(grade_logits: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy on the rows with a grade (``relevance >= 0``); 0 when there are none."""
    labelled = relevance >= 0
    if not labelled.any():
        return grade_logits.sum() * 0.0
    return F.cross_entropy(grade_logits[labelled], relevance[labelled])


def reference_kl(grade_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(reference || current) over rows, the reference held fixed."""
    return F.kl_div(
        F.log_softmax(grade_logits, -1),
        F.log_softmax(reference_logits.detach(), -1),
        log_target=True,
        reduction="batchmean",
    )
