"""The Base CTR module: P(click | rsl = r, x), one click head per relevance grade."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prectr.data.dataset import Batch
from prectr.modules.attention import CandidateInterest
from prectr.modules.embeddings import FeatureEmbedding, mlp
from prectr.modules.rsl import GRADES


class BaseCTR(CandidateInterest):
    """A DIN-style trunk with a click head per grade.

    The *context* is DIN's input (every field embedding, the candidate's target attention over
    the user's clicked items, the numerics: :class:`CandidateInterest`); the trunk MLP reads the
    context with the relevance embedding, so the click heads condition on relevance.
    ``monotone`` makes the click logit non-decreasing in the grade: head ``r`` is head 0 plus a
    sum of ``r`` softplus increments.
    """

    def __init__(
        self,
        embedding: FeatureEmbedding,
        relevance_dim: int,
        hidden: tuple[int, ...] = (256, 128, 64),
        attention_hidden: tuple[int, ...] = (80, 40),
        dropout: float = 0.0,
        monotone: bool = False,
    ):
        super().__init__(embedding, attention_hidden)
        self.monotone = monotone
        self.trunk = nn.Sequential(mlp([self.out_dim + relevance_dim, *hidden], dropout), nn.ReLU())
        self.heads = mlp([hidden[-1], GRADES])

    def context(
        self, batch: Batch, requests: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Everything but relevance, ``(B, out_dim)``; histories once per request given the
        batch's ``requests``."""
        return super().forward(batch, requests)

    def click_logits(self, context: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Click logits given each grade, ``(B, 4)``."""
        logits = self.heads(self.trunk(torch.cat([context, relevance], 1)))
        if not self.monotone:
            return logits
        increments = F.softplus(logits[:, 1:]).cumsum(-1)
        return torch.cat([logits[:, :1], logits[:, :1] + increments], 1)
