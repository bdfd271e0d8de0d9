"""Target attention (DIN, Zhou et al. 2018): a candidate weighs the items of a user's history."""

from __future__ import annotations

import torch
from torch import nn

from prectr.modules.embeddings import mlp


class TargetAttention(nn.Module):
    """Activation-unit attention of a query over keys, as in DIN (Zhou et al., KDD 2018).

    Each key's weight is an MLP over ``[q, k, q - k, q * k]``; the output is the weighted sum
    of the keys. As in the paper the weights are *not* softmax-normalised, so the output's
    scale carries how much of the history relates to the candidate. Padded keys get weight 0:
    an all-padding history gives a zero vector (never NaN).
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (80, 40), dropout: float = 0.0):
        super().__init__()
        self.score = mlp([4 * dim, *hidden, 1], dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``query`` (B, D), ``keys`` (B, L, D), ``mask`` (B, L) true where valid -> (B, D)."""
        q = query.unsqueeze(1).expand_as(keys)
        weight = self.score(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
        weight = weight * mask.to(weight.dtype)
        return torch.einsum("bl,bld->bd", weight, keys)
