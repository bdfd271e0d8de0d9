"""DCN-V2: a full-rank cross network in parallel with a deep MLP."""

from __future__ import annotations

import torch
from torch import nn

from prectr.data.dataset import Batch
from prectr.models.registry import RankingModel, register
from prectr.modules.embeddings import FeatureEmbedding, mlp


class CrossLayer(nn.Module):
    """One DCN-V2 cross layer: ``x_{l+1} = x_0 * (W x_l + b) + x_l`` with a full-rank ``W``."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


@register("dcnv2")
class DCNv2(RankingModel):
    """DCN-V2, parallel structure (Wang et al., WWW 2021).

    The input ``x_0`` is every field embedding (flattened) and the numerics; ``n_cross`` cross
    layers build bounded-degree feature crosses while an MLP reads the same ``x_0``; the last
    cross output and the MLP's last hidden layer are concatenated and mapped to the logit.
    """

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        n_cross: int = 3,
        hidden: tuple[int, ...] = (256, 128, 64),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding = FeatureEmbedding(specs, vocab_sizes, embedding_dim)
        width = self.embedding.flat_dim
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(n_cross))
        self.deep = mlp([width, *hidden], dropout)
        self.head = nn.Linear(width + hidden[-1], 1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x0 = self.embedding.flat(batch)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        deep = torch.relu(self.deep(x0))
        return {"logit": self.head(torch.cat([x, deep], 1)).squeeze(-1)}
