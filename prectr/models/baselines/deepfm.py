"""DeepFM: a factorisation machine and an MLP sharing the field embeddings."""

from __future__ import annotations

import torch

from prectr.data.dataset import Batch
from prectr.models.baselines.lr import FirstOrderTerm
from prectr.models.registry import RankingModel, register
from prectr.modules.embeddings import FeatureEmbedding, mlp


@register("deepfm")
class DeepFM(RankingModel):
    """DeepFM (Guo et al., IJCAI 2017): ``logit = first order + FM pairwise + DNN``.

    The first-order term is LR's logit over every feature (:class:`FirstOrderTerm`); the FM term
    sums the dot products of every pair of field embeddings, computed in O(F d) as
    ``((sum v)^2 - sum v^2) / 2``; the DNN reads the same field embeddings (flattened) and the
    numerics.
    """

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        hidden: tuple[int, ...] = (256, 128, 64),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.first_order = FirstOrderTerm(specs, vocab_sizes)
        self.embedding = FeatureEmbedding(specs, vocab_sizes, embedding_dim)
        self.mlp = mlp([self.embedding.flat_dim, *hidden, 1], dropout)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        v = self.embedding.fields(batch)
        pairwise = 0.5 * (v.sum(1).square() - v.square().sum(1)).sum(-1)
        deep = self.mlp(torch.cat([v.flatten(1), batch.numeric], 1)).squeeze(-1)
        return {"logit": self.first_order(batch) + pairwise + deep}
