"""DIN: the candidate item attends over the user's clicked items; the result joins the DNN."""

from __future__ import annotations

from typing import Any

import torch

from prectr.data.dataset import Batch
from prectr.data.groups import Role
from prectr.models.registry import RankingModel, register
from prectr.modules.attention import CandidateInterest
from prectr.modules.embeddings import FeatureEmbedding, mlp


@register("din")
class DIN(RankingModel):
    """Deep Interest Network (Zhou et al., KDD 2018).

    :class:`~prectr.modules.attention.CandidateInterest` pools the user's clicked items into
    one vector relevant to the candidate (target attention with unnormalised weights, as in the
    paper; padding masked out), which joins every field embedding and the numerics as the
    input of the MLP.
    """

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        hidden: tuple[int, ...] = (256, 128, 64),
        attention_hidden: tuple[int, ...] = (80, 40),
        dropout: float = 0.0,
    ):
        super().__init__()
        embedding = FeatureEmbedding(specs, vocab_sizes, embedding_dim)
        self.interest = CandidateInterest(embedding, attention_hidden)
        self.mlp = mlp([self.interest.out_dim, *hidden, 1], dropout)

    @classmethod
    def feature_roles(cls, params: dict[str, Any]) -> dict[str, tuple[Role, ...]]:
        """The candidate and the user's clicked items (:class:`CandidateInterest`)."""
        return {CandidateInterest.__name__: CandidateInterest.ROLES}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"logit": self.mlp(self.interest(batch, batch.request_groups())).squeeze(-1)}
