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

:class:`RelevanceIncentive` turns ``tau`` and the item's grade distribution into the incentive:
a positive expert ``softplus(f+(x))`` that can only raise the score, a negative expert
``-softplus(f-(x))`` that can only lower it, and a softmax gate between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prectr.data.dataset import Batch
from prectr.modules.attention import MultiHeadTargetAttention
from prectr.modules.embeddings import FeatureEmbedding, mlp
from prectr.modules.rsl import GRADES

USER_HISTORY = (("user_clicks", "item"), ("user_click_categories", "category"),
                ("user_click_queries", "query"), ("user_click_match", "match_level"))  # fmt: skip
CROWD_HISTORY = (("crowd_items", "item"), ("crowd_categories", "category"),
                 ("crowd_match", "match_level"), ("crowd_clicks", "click"))  # fmt: skip
#: The crowd entries' fields without the shown item's identity: what was tolerated, not which.
CROWD_TOLERANCE = tuple(f for f in CROWD_HISTORY if f[1] in ("match_level", "click"))
TARGET = (("query", "query"), ("item_id", "item"), ("category", "category"),
          ("match_level", "match_level"))  # fmt: skip


def crowd_fields(identity: bool = True) -> tuple[tuple[str, str], ...]:
    """The crowd entries' fields cross-user mining attends over: all of them, or with
    ``identity`` false only the match level and the click (see :class:`PreferenceMining`)."""
    return CROWD_HISTORY if identity else CROWD_TOLERANCE


class PreferenceMining(nn.Module):
    def __init__(
        self,
        embedding: FeatureEmbedding,
        dim: int = 32,
        heads: int = 2,
        cross_user: bool = True,
        activity_gate: bool = False,
        crowd_identity: bool = True,
    ):
        super().__init__()
        names = [s.name for s in embedding.categorical]
        sequences = {s.name for s in embedding.sequence_specs}
        self.crowd_fields = crowd_fields(crowd_identity)
        histories = USER_HISTORY + self.crowd_fields if cross_user else USER_HISTORY
        needed = {n for n, _ in histories} | {n for n, _ in TARGET}
        missing = sorted(needed - sequences - set(names))
        if missing:
            raise ValueError(f"the personalised incentive needs the features {', '.join(missing)}"
                             "; set features.relevance_context: true")  # fmt: skip
        self.target_columns = [(names.index(n), vocab) for n, vocab in TARGET]
        self.activity_column = [s.name for s in embedding.numeric_specs].index("user_activity")
        width = 4 * embedding.dim
        self.user = MultiHeadTargetAttention(width, width, dim, heads)
        self.crowd = None
        if cross_user:
            entry = len(self.crowd_fields) * embedding.dim
            self.crowd = MultiHeadTargetAttention(width, entry, dim, heads)
        self.gate = nn.Linear(1, 1) if cross_user and activity_gate else None
        self.dim = dim

    def forward(
        self, batch: Batch, embedding: FeatureEmbedding,
        requests: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``tau``, ``(B, dim)``; ``embedding`` holds the tables the histories are read in, once
        per request given the batch's ``requests`` (:meth:`Batch.requests`)."""
        target = torch.cat(
            [embedding.lookup(vocab, batch.categorical[:, i]) for i, vocab in self.target_columns],
            -1,
        )
        first, owner = requests or (None, None)
        r_user = self.user(target, *self._history(batch, embedding, USER_HISTORY, first), owner)
        if self.crowd is None:
            return r_user
        crowd = self._history(batch, embedding, self.crowd_fields, first)
        r_cate = self.crowd(target, *crowd, owner)
        if self.gate is None:
            return r_user + r_cate
        activity = batch.numeric[:, [self.activity_column]]
        g = torch.sigmoid(self.gate(activity))
        return g * r_user + (1 - g) * r_cate

    @staticmethod
    def _history(
        batch: Batch, embedding: FeatureEmbedding, fields: tuple, first: torch.Tensor | None
    ) -> tuple:
        parts = [embedding.sequence(batch, name, first) for name, _ in fields]
        return torch.cat([p[0] for p in parts], -1), parts[-1][1]  # match/click: never PAD


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
