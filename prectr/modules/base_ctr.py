"""The Base CTR module: P(click | rsl = r, x), a click logit per relevance grade."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prectr.data.dataset import Batch
from prectr.modules.attention import CandidateInterest
from prectr.modules.embeddings import FeatureEmbedding, mlp
from prectr.modules.rsl import GRADES

# the click heads per grade: each its own output of the trunk (the paper's), or one shared
# click logit plus a learnt offset per grade
GradeHeads = Literal["free", "offset"]


class BaseCTR(CandidateInterest):
    """A click trunk with a click logit per grade (free or tied heads).

    The *context* is DIN's input (every field embedding, the candidate's target attention over
    the user's clicked items, the numerics: :class:`CandidateInterest`; without
    ``target_attention`` the clicked items only mean-pooled, an Emb+MLP input); the trunk MLP
    reads the context with the relevance embedding, so the click heads condition on relevance.
    ``monotone`` makes the click logit non-decreasing in the grade: head ``r`` is head 0 plus a
    sum of ``r`` softplus increments. ``grade_heads`` ``free`` (the paper's) gives every grade
    its own output of the trunk; ``offset`` ties the heads: one click logit for the candidate
    plus a learnt offset per grade, the same for every candidate, so the grades' heads differ
    by constants (docs/fidelity.md, "Tied click heads for the paper's V2 arm").

    The trunk's first layer is applied in two parts, ``W_c context + b`` (:meth:`context_layer`)
    plus ``W_r relevance``: the same layer, but the context's part can be computed once and
    shared, by a candidate with its synthetic negatives (which differ only in relevance) and,
    for the request-level columns of the context, by a request's candidates.
    """

    def __init__(
        self,
        embedding: FeatureEmbedding,
        relevance_dim: int,
        hidden: tuple[int, ...] = (256, 128, 64),
        attention_hidden: tuple[int, ...] = (80, 40),
        dropout: float = 0.0,
        monotone: bool = False,
        target_attention: bool = False,
        grade_heads: GradeHeads = "free",
    ):
        super().__init__(embedding, attention_hidden, target_attention)
        self.monotone = monotone
        self.trunk = nn.Sequential(mlp([self.out_dim + relevance_dim, *hidden], dropout), nn.ReLU())
        tied = grade_heads == "offset"
        self.heads = mlp([hidden[-1], 1 if tied else GRADES])
        # head 0's offset is the shared logit's bias: the other grades' are relative to it
        self.grade_offsets = nn.Parameter(torch.zeros(GRADES - 1)) if tied else None
        shared = request_columns(embedding, self.interest_dim)
        for name, columns in (("request_columns", shared), ("row_columns", ~shared)):
            self.register_buffer(name, torch.nonzero(columns).squeeze(1), persistent=False)

    def context(
        self, batch: Batch, requests: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Everything but relevance, ``(B, out_dim)``; histories once per request given the
        batch's ``requests``."""
        return super().forward(batch, requests)

    def context_layer(
        self, context: torch.Tensor, requests: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The trunk's first layer on the context alone, its bias included, ``(B, hidden[0])``.
        Given the batch's ``requests``, the request-level columns (the request's fields and
        numerics, equal on each of its rows) are multiplied once per request."""
        first_layer = self.trunk[0][0]
        weight = first_layer.weight[:, : self.out_dim]
        if requests is None:
            return F.linear(context, weight, first_layer.bias)
        first, owner = requests
        shared, own = self.request_columns, self.row_columns
        per_request = F.linear(context.index_select(0, first).index_select(1, shared),
                               weight.index_select(1, shared))  # fmt: skip
        per_row = F.linear(context.index_select(1, own), weight.index_select(1, own),
                           first_layer.bias)  # fmt: skip
        return per_row + per_request.index_select(0, owner)

    def click_logits(self, context: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Click logits given each grade, ``(B, 4)``."""
        return self.layered_click_logits(self.context_layer(context), relevance)

    def layered_click_logits(
        self, context_layer: torch.Tensor, relevance: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`click_logits` from the context's :meth:`context_layer`."""
        relevance_weight = self.trunk[0][0].weight[:, self.out_dim :]
        hidden = context_layer + F.linear(relevance, relevance_weight)
        logits = self.heads(self.trunk[1](self.trunk[0][1:](hidden)))
        if self.grade_offsets is None and not self.monotone:
            return logits
        first, offsets = logits[:, :1], self.grade_offsets
        steps = logits[:, 1:] if offsets is None else offsets  # the offsets broadcast over rows
        if self.monotone:
            steps = F.softplus(steps).cumsum(-1)
        return torch.cat([first, first + steps], 1)


def request_columns(embedding: FeatureEmbedding, interest_dim: int) -> torch.Tensor:
    """Which columns of :class:`CandidateInterest`'s output (each field's embedding, the
    candidate's interest of width ``interest_dim``, the numerics) hold a request-level
    feature, ``(out_dim,)`` bool."""
    fields = embedding.categorical + embedding.pooled_specs
    levels = [s.level for s in fields for _ in range(embedding.dim)]
    levels += ["impression"] * interest_dim  # the interest: the candidate's own
    levels += [s.level for s in embedding.numeric_specs]
    return torch.tensor([level == "request" for level in levels])
