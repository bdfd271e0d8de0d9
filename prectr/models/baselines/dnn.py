"""DNN: every field's embedding and the numerics, concatenated, through an MLP."""

from __future__ import annotations

import torch
from torch import nn

from prectr.data.dataset import Batch
from prectr.models.registry import RankingModel, register
from prectr.modules.embeddings import FeatureEmbedding, mlp


class FieldMLP(nn.Module):
    """Every field's embedding and the numerics, concatenated, through an MLP to one logit:
    the logit of :class:`DNN`, and the two-model baseline's CTR model."""

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int,
        hidden: tuple[int, ...],
        dropout: float,
    ):
        super().__init__()
        self.embedding = FeatureEmbedding(specs, vocab_sizes, embedding_dim)
        self.mlp = mlp([self.embedding.flat_dim, *hidden, 1], dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.mlp(self.embedding.flat(batch)).squeeze(-1)


@register("dnn")
class DNN(RankingModel):
    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        hidden: tuple[int, ...] = (256, 128, 64),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.tower = FieldMLP(specs, vocab_sizes, embedding_dim, hidden, dropout)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"logit": self.tower(batch)}
