"""The RSL module: P(rsl = r | x), the relevance score level of a (query, item) pair.

A text encoder turns the query and the item's title into a vector; a linear layer and a ReLU
turn that into the *relevance embedding* (the representation the rest of PRECTR conditions
on); an MLP head gives one logit per grade (0 irrelevant, 1 complement, 2 substitute, 3 exact).
The layer's output before the ReLU is given apart (:meth:`RSLModule.pre_activation`): PRECTR-V2
mixes a click's with a low-grade candidate's there, so that a synthetic hard negative is, like
every real embedding, the ReLU of a point of the layer's output space (non-negative, sparse),
not a real embedding with noise of either sign on top.
"""

from __future__ import annotations

import torch
from torch import nn

from prectr.data import groups as g
from prectr.data.dataset import Batch
from prectr.data.features import Numeric
from prectr.data.groups import find, require
from prectr.modules.embeddings import FeatureEmbedding, mlp

GRADES = 4
# grades 0 (irrelevant) and 1 (complement): the low grades a synthetic hard negative is
# reconstructed as, and the real candidates the linear probe compares it with
LOW_GRADES = 2
MATCH = (g.TITLE_MATCH, g.CATEGORY_MATCH)


def match_columns(specs: list) -> list[int]:
    """Where the match numerics (:data:`MATCH`) the features carry sit in ``batch.numeric``."""
    numerics = [s for s in specs if isinstance(s, Numeric)]
    return [numerics.index(s) for s in (find(numerics, r) for r in MATCH) if s is not None]


class BagOfTokensEncoder(nn.Module):
    """The stand-in text encoder until the distilled student replaces it: mean-pooled query
    and title token embeddings ``q`` and ``t``, as ``[q, t, q * t, q - t]``, with the match
    numerics the features carry (share of query tokens in the title, category match)."""

    ROLES = (g.QUERY_WORDS, g.TITLE_WORDS)

    def __init__(self, specs: list, vocab_sizes: dict[str, int], dim: int):
        super().__init__()
        words = require(specs, self.ROLES, BagOfTokensEncoder.__name__)
        self.embedding = FeatureEmbedding(words, vocab_sizes, dim)
        self.match_columns = match_columns(specs)
        self.out_dim = 4 * dim + len(self.match_columns)

    def forward(self, batch: Batch) -> torch.Tensor:
        q, t = self.embedding.fields(batch).unbind(1)
        return torch.cat([q, t, q * t, q - t, batch.numeric[:, self.match_columns]], 1)


class RSLModule(nn.Module):
    """Text -> relevance embedding (the first hidden layer, ReLU) -> grade logits (the rest
    of the MLP, nonlinear)."""

    def __init__(self, text: nn.Module, text_dim: int, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        self.text = text
        self.embedding = nn.Sequential(mlp([text_dim, hidden[0]]), nn.ReLU())
        self.head = mlp([*hidden, GRADES])
        self.dim = hidden[0]

    def pre_activation(self, batch: Batch) -> torch.Tensor:
        """The relevance embedding before its ReLU, ``(B, dim)``."""
        return self.embedding[0](self.text(batch))

    def activate(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """Relevance embeddings of pre-activations (the ReLU)."""
        return self.embedding[1](pre_activation)

    def embed(self, batch: Batch) -> torch.Tensor:
        """The relevance embedding, ``(B, dim)``."""
        return self.activate(self.pre_activation(batch))

    def classify(self, relevance: torch.Tensor) -> torch.Tensor:
        """Grade logits ``(B, 4)`` of relevance embeddings; softmax gives P(rsl = r | x)."""
        return self.head(relevance)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classify(self.embed(batch))
