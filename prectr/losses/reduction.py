"""Averaging a loss over rows, one process or many.

A loss sums its per-row terms and divides by a row count it is given (``Batch.rows_of``):
the batch's own in one process, the step's count per process under DDP, so that the average of
the processes' gradients is the gradient of the mean over every row of the step.
"""

from __future__ import annotations

import torch


def per_row(total: torch.Tensor, rows: float) -> torch.Tensor:
    """``total``, a sum over rows, divided by ``rows``; 0 when there are none (``total`` then
    sums no terms)."""
    return total / rows if rows > 0 else total * 0.0
