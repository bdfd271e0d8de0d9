"""Semantic consistency regularisation: keep the RSL output faithful while clicks train it.

Two forms: cross-entropy to the observed human grades on the labelled pairs of a batch (the
default: it needs no stage 1 and keeps learning from labels), or the KL divergence from the
RSL module as it was at the end of stage 1 to the current one, on every pair (it anchors the
whole distribution, labelled or not, and needs a stage 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prectr.losses.reduction import per_row


def grade_cross_entropy(
    grade_logits: torch.Tensor, relevance: torch.Tensor, rows: float | None = None
) -> torch.Tensor:
    """Cross-entropy on the rows with a grade (``relevance >= 0``), summed and divided by
    ``rows`` (default: the graded rows, a mean); 0 when there are none."""
    labelled = relevance >= 0
    total = F.cross_entropy(grade_logits[labelled], relevance[labelled], reduction="sum")
    return per_row(total, float(labelled.sum()) if rows is None else rows)


def reference_kl(
    grade_logits: torch.Tensor, reference_logits: torch.Tensor, rows: float | None = None
) -> torch.Tensor:
    """KL(reference || current) summed over rows and divided by ``rows`` (default: all of
    them, a mean), the reference held fixed."""
    total = F.kl_div(
        F.log_softmax(grade_logits, -1),
        F.log_softmax(reference_logits.detach(), -1),
        log_target=True,
        reduction="sum",
    )
    return per_row(total, float(grade_logits.shape[0]) if rows is None else rows)
