"""The personalised relevance incentive: how much a user tolerates less relevant items, learnt
from behaviour, nudges the ranking logit up or down.

:class:`PreferenceMining` reads the relevance preference ``tau`` off histories: PRECTR attends
over the user's own clicks (each with the query it was clicked under and its match level), so a
click under a similar query counts most (``r_user``); PRECTR-V2 adds the same attention over the
cross-user crowd, what *all* users were shown and clicked under the same query recently (backed
off to the query's category for a rare query; see :mod:`prectr.data.history`), ``r_cate``, so a
user with no history still gets the crowd's preference. ``tau = r_user + r_cate``, as the
paper's figure sums them; with ``activity_gate`` instead a mix weighted by the user's activity,
``g * r_user + (1 - g) * r_cate`` with ``g = sigmoid(a * activity + b)`` learnt, so a frequent
user's own history counts more.

What the crowd's entries say is ``crowd_signal``'s choice. ``entries`` (the paper's): each
exposed impression of the window (its item and category unless ``crowd_identity`` is false,
its match level, its click), so the crowd also tells how often people click under the query,
how many impressions it had and at which match levels. ``relative``: one entry per match level,
the level's click rate in the window minus the window's mean click rate
(:func:`relative_clicks`), so the crowd says only which match levels are clicked more or less
than usual under the query; its base rate, the window's length and whether there is a crowd
at all do not reach ``tau``, nor how often each level was shown but through the mean each rate
is centred on (docs/fidelity.md, third design).

``crowd_from: other`` is a control, not a design: the module, its tables and its training are
the same, but each request reads the crowd of another query's request of its batch
(:func:`other_query_requests`), or none where the batch has no other query, so the crowd holds
next to nothing about the request's own query (a rare query's crowd backs off to its
category's, which a partner may share). The partners depend on the batch, so they differ
between training (shuffled requests) and scoring (requests in time order); a served request is
alone in its batch, and the ranker refuses the control. V2 against this control measures
what mining learns from the crowd, with the capacity and the training path held equal
(docs/fidelity.md).

:class:`RelevanceIncentive` turns ``tau`` and the item's grade distribution into the incentive:
a positive expert ``softplus(f+(x))`` that can only raise the score, a negative expert
``-softplus(f-(x))`` that can only lower it, and a softmax gate between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prectr.data import groups as g
from prectr.data.dataset import Batch
from prectr.data.groups import Role, find, require
from prectr.data.vocabulary import OOV, PAD
from prectr.modules.attention import MultiHeadTargetAttention
from prectr.modules.embeddings import FeatureEmbedding, mlp
from prectr.modules.rsl import GRADES

USER_HISTORY = (g.CLICKED_ITEMS, g.CLICKED_CATEGORIES, g.CLICKED_QUERIES, g.CLICKED_MATCH)
CROWD_HISTORY = (g.CROWD_ITEMS, g.CROWD_CATEGORIES, g.CROWD_MATCH, g.CROWD_CLICKS)
#: The crowd entries' fields without the shown item's identity: what was tolerated, not which.
CROWD_TOLERANCE = (g.CROWD_MATCH, g.CROWD_CLICKS)
TARGET = (g.QUERY, g.ITEM, g.ITEM_CATEGORY, g.MATCH_LEVEL)
CROWD_SIGNALS = ("entries", "relative")
CROWD_SOURCES = ("own", "other")
FIRST_ID = OOV + 1  # a vocabulary's first value: match level 0, click 0 (no click)
CLICKED_ID = FIRST_ID + 1  # the click vocabulary holds [0, 1]


def crowd_fields(identity: bool = True) -> tuple[Role, ...]:
    """The crowd entries' fields cross-user mining attends over: all of them, or with
    ``identity`` false only the match level and the click (see :class:`PreferenceMining`)."""
    return CROWD_HISTORY if identity else CROWD_TOLERANCE


def relative_clicks(match: torch.Tensor, clicks: torch.Tensor, levels: int) -> torch.Tensor:
    """Crowds of match-level ids and click ids ``(N, L)`` (``PAD`` where a window is short) ->
    ``(N, levels)``: each match level's click rate in the crowd minus the crowd's mean click
    rate (the mean over the level's entries of each entry's click centred on the window's
    mean), 0 for a level the crowd does not show and for every level of an empty crowd. Adding
    a constant to every level's click rate, or repeating the window, changes nothing."""
    valid = (clicks != PAD).to(torch.float32)
    clicked = (clicks == CLICKED_ID).to(torch.float32)
    level = F.one_hot((match.long() - FIRST_ID).clamp(min=0), levels) * valid.unsqueeze(-1)
    shown = level.sum(1)  # (N, levels)
    rate = (level * clicked.unsqueeze(-1)).sum(1) / shown.clamp(min=1)
    mean = clicked.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
    return torch.where(shown > 0, rate - mean, torch.zeros_like(rate))


def other_query_requests(query: torch.Tensor) -> torch.Tensor:
    """Each request's partner for ``crowd_from: other``, given the requests' query ids ``(R,)``:
    the request half the batch away in the order of query ids, ``(R,)``. Its query differs
    wherever no one query holds half of the batch's requests or more; a request whose partner
    shares its query (or is itself) is given no crowd by the caller."""
    order = torch.argsort(query, stable=True)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-(len(query) // 2))
    return partner


class PreferenceMining(nn.Module):
    def __init__(
        self,
        embedding: FeatureEmbedding,
        dim: int = 32,
        heads: int = 2,
        cross_user: bool = True,
        activity_gate: bool = False,
        crowd_identity: bool = True,
        crowd_signal: str = "entries",
        crowd_from: str = "own",
    ):
        super().__init__()
        if crowd_signal not in CROWD_SIGNALS:
            raise ValueError(f"crowd_signal {crowd_signal!r}: expected one of {CROWD_SIGNALS}")
        if crowd_from not in CROWD_SOURCES:
            raise ValueError(f"crowd_from {crowd_from!r}: expected one of {CROWD_SOURCES}")
        if crowd_signal == "relative" and crowd_identity:
            raise ValueError("crowd_signal relative keeps no item identity: it needs "
                             "crowd_identity: false")  # fmt: skip
        specs = embedding.categorical + embedding.sequence_specs + embedding.numeric_specs
        reader = PreferenceMining.__name__
        require(specs, self.roles(cross_user, activity_gate, crowd_identity), reader)
        target = require(specs, TARGET, reader)
        self.target_columns = [embedding.categorical.index(s) for s in target]
        self.user_history = [s.name for s in require(specs, USER_HISTORY, reader)]
        crowd = require(specs, crowd_fields(crowd_identity), reader) if cross_user else []
        self.crowd_history = [s.name for s in crowd]
        self.activity_column = None
        if cross_user and activity_gate:
            activity = find(specs, g.USER_ACTIVITY)
            self.activity_column = embedding.numeric_specs.index(activity)
        width = 4 * embedding.dim
        self.user = MultiHeadTargetAttention(width, width, dim, heads)
        self.crowd, self.relative = None, crowd_signal == "relative"
        self.other_query = crowd_from == "other"
        if cross_user:
            entry = embedding.dim + 1 if self.relative else len(crowd) * embedding.dim
            self.crowd = MultiHeadTargetAttention(width, entry, dim, heads)
        self.levels = find(crowd, g.CROWD_MATCH).vocab if crowd else None  # the levels' table
        self.gate = nn.Linear(1, 1) if cross_user and activity_gate else None
        self.dim = dim

    @staticmethod
    def roles(cross_user: bool, activity_gate: bool, crowd_identity: bool) -> tuple[Role, ...]:
        """The features mining reads: the target (query, candidate, its match level), the
        user's history and, with ``cross_user``, the crowd's fields (:func:`crowd_fields`) and,
        gated, the user's activity."""
        if not cross_user:
            return TARGET + USER_HISTORY
        gate = (g.USER_ACTIVITY,) if activity_gate else ()
        return TARGET + USER_HISTORY + crowd_fields(crowd_identity) + gate

    def forward(
        self, batch: Batch, embedding: FeatureEmbedding,
        requests: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``tau``, ``(B, dim)``; ``embedding`` holds the tables the histories are read in, once
        per request given the batch's ``requests`` (:meth:`Batch.requests`)."""
        target = torch.cat([embedding.column(batch, i) for i in self.target_columns], -1)
        first, owner = requests or (None, None)
        r_user = self.user(target, *self._history(batch, embedding, self.user_history, first),
                           owner)  # fmt: skip
        if self.crowd is None:
            return r_user
        r_cate = self.crowd(target, *self._crowd(batch, embedding, requests))
        if self.gate is None:
            return r_user + r_cate
        activity = batch.numeric[:, [self.activity_column]]
        user_share = torch.sigmoid(self.gate(activity))
        return user_share * r_user + (1 - user_share) * r_cate

    def _crowd(
        self, batch: Batch, embedding: FeatureEmbedding,
        requests: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The crowd's entries, their validity and each row's owner, as the crowd attention
        takes them: the request's own crowd, or with ``crowd_from: other`` its partner's
        (:func:`other_query_requests`), read once per request, and an empty crowd where the
        partner asks the same query."""
        first, owner = requests or (None, None)
        keep = None
        if self.other_query:
            first, owner = requests or batch.requests()
            query = batch.categorical[first, self.target_columns[0]]  # TARGET's query
            partner = other_query_requests(query)
            first, keep = first[partner], query[partner] != query
        if self.relative:
            return (*self._relative(batch, embedding, first, keep), owner)
        entries, valid = self._history(batch, embedding, self.crowd_history, first)
        return entries, valid if keep is None else valid & keep.unsqueeze(1), owner

    @staticmethod
    def _history(
        batch: Batch, embedding: FeatureEmbedding, names: list[str], first: torch.Tensor | None
    ) -> tuple:
        parts = [embedding.sequence(batch, name, first) for name in names]
        return torch.cat([p[0] for p in parts], -1), parts[-1][1]  # match/click: never PAD

    def _relative(
        self, batch: Batch, embedding: FeatureEmbedding, first: torch.Tensor | None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The ``relative`` crowd: every match level's embedding beside its
        :func:`relative_clicks`, ``(N, levels, dim + 1)``, all valid; where ``keep`` ``(N,)``
        is false, the clicks of an empty crowd (0 for every level)."""
        match, clicks = (batch.sequences[name] for name in self.crowd_history)  # TOLERANCE's
        if first is not None:
            match, clicks = match[first], clicks[first]
        table = embedding.tables[self.levels].weight[FIRST_ID:]  # (levels, dim)
        relative = relative_clicks(match, clicks, table.shape[0])
        if keep is not None:
            relative = relative * keep.unsqueeze(1)
        entries = torch.cat([table.expand(len(relative), -1, -1), relative.unsqueeze(-1)], -1)
        return entries, torch.ones(relative.shape, dtype=torch.bool, device=relative.device)


class RelevanceIncentive(nn.Module):
    """``incentive = g+ * softplus(f+(x)) - g- * softplus(f-(x))``, ``x = [tau, P(rsl)]``."""

    def __init__(self, preference_dim: int, hidden: tuple[int, ...] = (32,)):
        super().__init__()
        width = preference_dim + GRADES
        self.positive = mlp([width, *hidden, 1])
        self.negative = mlp([width, *hidden, 1])
        self.gate = mlp([width, *hidden, 2])

    def forward(self, tau: torch.Tensor, grade_probs: torch.Tensor) -> torch.Tensor:
        """The incentive added to the ranking logit, ``(B,)``."""
        x = torch.cat([tau, grade_probs], 1)
        gate = torch.softmax(self.gate(x), -1)
        up = F.softplus(self.positive(x)).squeeze(-1)
        down = -F.softplus(self.negative(x)).squeeze(-1)
        return gate[:, 0] * up + gate[:, 1] * down
