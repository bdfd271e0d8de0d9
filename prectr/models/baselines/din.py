"""DIN: the candidate item attends over the user's clicked items; the result joins the DNN."""

from __future__ import annotations

import torch

from prectr.data.dataset import Batch
from prectr.models.registry import RankingModel, register
from prectr.modules.attention import TargetAttention
from prectr.modules.embeddings import FeatureEmbedding, mlp


@register("din")
class DIN(RankingModel):
    """Deep Interest Network (Zhou et al., KDD 2018).

    The candidate is its item-id embedding concatenated with its category embedding; each
    clicked item of the user (``user_clicks`` with ``user_click_categories``) is embedded the
    same way, in the same tables. :class:`TargetAttention` (unnormalised weights, as in the
    paper; padding masked out) pools the history into one vector relevant to this candidate,
    which joins every field embedding and the numerics as the input of the MLP.
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
        self.embedding = FeatureEmbedding(specs, vocab_sizes, embedding_dim)
        names = [s.name for s in self.embedding.categorical]
        self.item_column, self.category_column = names.index("item_id"), names.index("category")
        self.attention = TargetAttention(2 * embedding_dim, attention_hidden)
        width = (self.embedding.n_fields + 2) * embedding_dim + self.embedding.n_numeric
        self.mlp = mlp([width, *hidden, 1], dropout)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        emb = self.embedding
        candidate = torch.cat(
            [
                emb.lookup("item", batch.categorical[:, self.item_column]),
                emb.lookup("category", batch.categorical[:, self.category_column]),
            ],
            -1,
        )
        items, mask = emb.sequence(batch, "user_clicks")
        categories, _ = emb.sequence(batch, "user_click_categories")
        interest = self.attention(candidate, torch.cat([items, categories], -1), mask)
        x = torch.cat([emb.fields(batch).flatten(1), interest, batch.numeric], 1)
        return {"logit": self.mlp(x).squeeze(-1)}
