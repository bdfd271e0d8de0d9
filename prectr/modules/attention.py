"""Target attention: a candidate (or any target) weighs the entries of a history."""

from __future__ import annotations

import torch
from torch import nn

from prectr.data import groups as g
from prectr.data.dataset import Batch
from prectr.data.groups import require
from prectr.modules.embeddings import FeatureEmbedding, mlp


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

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
        owner: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``query`` (B, D), ``keys`` (B or 1, L, D), ``mask`` (B or 1, L) true where valid ->
        (B, D); with ``owner`` (B,), ``keys`` and ``mask`` hold one row per request and row
        ``b`` reads that of request ``owner[b]``.

        The first layer over ``[q, k, q - k, q * k]`` is computed as its four blocks,
        ``(W_q + W_d) q + (W_k - W_d) k + W_p (q * k)``: the same function, but the query term
        is computed once per candidate and the key term once per history entry, leaving only the
        product term per (candidate, entry) pair; and only the valid pairs are scored and summed
        (a padded entry's weight is 0), gathered into one ``(P, H)`` batch, ``P`` the valid
        pairs. One history shared by the batch (one request's candidates, as served) goes
        further: :meth:`_shared_first_layer`.
        """
        first = self.score[0]
        w_q, w_k, w_d, w_p = first.weight.split(query.shape[1], dim=1)
        if owner is None and keys.shape[0] == 1:
            hidden = self._shared_first_layer(query, keys[0], w_q + w_d, w_k - w_d, w_p)
            weight = self.score[1:](hidden).squeeze(-1) * mask.to(hidden.dtype)  # (B, L)
            return weight @ keys[0]
        if owner is None:
            owner = torch.arange(query.shape[0], device=query.device)
        # index_select, never indexing: their backward sums repeated rows in a fixed order
        row, entry = torch.nonzero(mask.index_select(0, owner), as_tuple=True)  # valid pairs
        flat = owner.index_select(0, row) * keys.shape[1] + entry  # the pair's entry in keys
        key = keys.flatten(0, 1).index_select(0, flat)  # (P, D)
        per_query = torch.addmm(first.bias, query, (w_q + w_d).T)  # (B, H)
        per_key = (keys @ (w_k - w_d).T).flatten(0, 1)  # (R * L, H)
        # the pairs' first layer and its ReLU in one (P, H) buffer, updated in place: at P in
        # the tens of thousands, each (P, H) temporary costs as much as the product's GEMM
        hidden = (per_query.index_select(0, row).add_(per_key.index_select(0, flat))
                  .addmm_(query.index_select(0, row) * key, w_p.T).relu_())  # fmt: skip
        weight = self.score[2:](hidden)  # (P, 1): score[1] is the first layer's ReLU
        return query.new_zeros(query.shape[0], keys.shape[2]).index_add(0, row, weight * key)

    def _shared_first_layer(
        self, query: torch.Tensor, keys: torch.Tensor, w_query: torch.Tensor,
        w_key: torch.Tensor, w_product: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The first layer for keys ``(L, D)`` shared by every query, ``(B, L, H)``, as one
        matrix product: entry ``l``'s pre-activation is ``q @ (W_query + k_l * W_product)^T +
        (bias + W_key k_l)``, so the per-entry weights ``(D, L * H)`` and offsets
        ``(L * H,)`` are built once per history and the pairs cost a single GEMM."""
        length, hidden = keys.shape[0], w_query.shape[0]
        weights = w_query.T.unsqueeze(1) + keys.T.unsqueeze(2) * w_product.T.unsqueeze(1)
        offsets = keys @ w_key.T + self.score[0].bias  # (L, H)
        out = torch.addmm(offsets.reshape(-1), query, weights.reshape(query.shape[1], -1))
        return out.view(query.shape[0], length, hidden)


class MultiHeadTargetAttention(nn.Module):
    """Scaled dot-product attention of one target over a history, with several heads.

    The target (B, Dq) and each history entry (B, L, Dk) are projected to ``heads`` query, key
    and value spaces; each head's softmax over the valid entries weighs the values, and the
    heads are concatenated and projected to ``out_dim``. An all-padding history gives a zero
    vector, never NaN.
    """

    def __init__(self, target_dim: int, entry_dim: int, out_dim: int, heads: int = 2):
        super().__init__()
        if out_dim % heads:
            raise ValueError(f"out_dim {out_dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, out_dim // heads
        self.query = nn.Linear(target_dim, out_dim, bias=False)
        self.key = nn.Linear(entry_dim, out_dim, bias=False)
        self.value = nn.Linear(entry_dim, out_dim, bias=False)
        self.out = nn.Linear(out_dim, out_dim)

    def forward(
        self, target: torch.Tensor, entries: torch.Tensor, mask: torch.Tensor,
        owner: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``target`` (B, Dq), ``entries`` (B or 1, L, Dk), ``mask`` (B or 1, L) true where
        valid -> (B, out_dim); with ``owner`` (B,), ``entries`` and ``mask`` hold one row per
        request and row ``b`` reads that of request ``owner[b]`` (a request's rows consecutive).

        Each history is projected once and its targets are attended as one group ``(N, Dq)``:
        all rows for a shared history, each row alone for per-row ones, a request's rows
        (zero-padded to the largest request) for per-request ones, so no history is ever
        copied per row.
        """
        e, length = entries.shape[:2]
        if owner is None:
            targets, slot = target.view(e, -1, target.shape[1]), None
        else:
            targets, slot = by_request(target, owner, e)
        n, heads, dim = targets.shape[1], self.heads, self.head_dim
        q = self.query(targets).view(e, n, heads, dim).transpose(1, 2)  # (E, H, N, d)
        k = self.key(entries).view(e, length, heads, dim).transpose(1, 2)  # (E, H, L, d)
        v = self.value(entries).view(e, length, heads, dim).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / dim**0.5  # (E, H, N, L)
        valid = mask.view(e, 1, 1, length)
        # a large negative, not -inf: an all-padding row then gets weights 0 (after the mask),
        # never the NaN of a softmax over nothing, in the forward and the backward pass
        weight = torch.softmax(logits.masked_fill(~valid, -1e9), -1) * valid
        pooled = (weight @ v).transpose(1, 2).reshape(e, n, heads * dim)
        out = self.out(pooled) * mask.any(1).view(e, 1, 1).to(pooled.dtype)
        out = out.reshape(e * n, -1)
        return out if slot is None else out[slot]


def by_request(
    rows: torch.Tensor, owner: torch.Tensor, requests: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` (B, D) of ``requests`` requests (``owner`` (B,), non-decreasing) laid out as
    ``(requests, N, D)``, N the most rows of a request, zero-padded, and each row's slot in
    the flattened ``(requests * N)``."""
    counts = torch.bincount(owner, minlength=requests)
    n = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    slot = owner * n + torch.arange(len(owner), device=owner.device) - start[owner]
    padded = rows.new_zeros(requests * n, rows.shape[1]).index_copy(0, slot, rows)
    return padded.view(requests, n, -1), slot


class CandidateInterest(nn.Module):
    """DIN's input layer: every field embedding, the candidate's :class:`TargetAttention` over
    the user's clicked items and the numerics, concatenated to ``(B, out_dim)``.

    The candidate is its item-id embedding concatenated with its category embedding; each
    clicked item (the user history's items with their categories) is embedded the same way, in
    the same tables. Without ``target_attention`` the clicked items are read only as the mean
    of their embeddings, one field among the others: the Emb+MLP input of PRECTR's base
    module, as the PRECTR-V2 paper (Cao et al. 2026) describes its predecessor, which scores
    no history entry against the candidate's own item-id embedding.
    """

    #: the candidate (item and category), then the clicked items and their categories
    ROLES = (g.ITEM, g.ITEM_CATEGORY, g.CLICKED_ITEMS, g.CLICKED_CATEGORIES)

    def __init__(
        self,
        embedding: FeatureEmbedding,
        attention_hidden: tuple[int, ...] = (80, 40),
        target_attention: bool = True,
    ):
        super().__init__()
        self.embedding = embedding
        specs = embedding.categorical + embedding.sequence_specs
        item, category, *self.history = require(specs, self.ROLES, CandidateInterest.__name__)
        self.candidate = [embedding.categorical.index(s) for s in (item, category)]
        self.attention = (
            TargetAttention(2 * embedding.dim, attention_hidden) if target_attention else None
        )
        self.interest_dim = 2 * embedding.dim if target_attention else 0
        self.out_dim = embedding.n_fields * embedding.dim + self.interest_dim + embedding.n_numeric

    def forward(
        self, batch: Batch, requests: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``requests`` (:meth:`Batch.requests`): read the user's clicks once per request."""
        emb, (first, owner) = self.embedding, requests or (None, None)
        fields = emb.fields(batch, requests).flatten(1)
        if self.attention is None:
            return torch.cat([fields, batch.numeric], 1)
        candidate = torch.cat([emb.column(batch, i) for i in self.candidate], -1)
        (items, mask), (categories, _) = (emb.sequence(batch, s.name, first) for s in self.history)
        interest = self.attention(candidate, torch.cat([items, categories], -1), mask, owner)
        return torch.cat([fields, interest, batch.numeric], 1)
