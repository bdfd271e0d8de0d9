"""PRECTR-V2's pairwise exposure-bias correction: clicked items above their hard negatives.

Each positive ``i`` (a clicked impression) is paired with ``K`` negatives ``j`` (synthetic: its
own relevance embedding with noise injected; or unexposed candidates of its request). With
``d = s_i - s_j`` the difference of ranking logits, a pair costs
``w_i * softplus(margin - max(d, -clip))``:

* **margin**: the pair keeps a (decaying) cost until the positive leads by about ``margin``;
* **margin clipping**: ``d`` is clipped from below at ``-clip``, so a pair the model ranks
  badly wrong (often a click on a truly irrelevant item, i.e. noise) costs at most
  ``softplus(margin + clip)`` and gives no gradient, instead of dominating the batch;
* **dynamic truncation**: pairs already ordered by more than ``truncate`` are dropped, and the
  sum is divided by the number of *all* pairs, so the term fades as the pairs are learnt and
  cannot swamp the click loss; ``truncate`` follows a schedule (see :func:`truncation`);
* **weight** ``w_i``: how sure the model is that the positive is relevant, P(grade >= 2),
  detached; pushing a doubtful positive above its negatives teaches little.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prectr.losses.reduction import per_row


def pairwise_debias(
    positive: torch.Tensor,
    negative: torch.Tensor,
    weight: torch.Tensor,
    margin: float = 1.0,
    clip: float = 4.0,
    truncate: float = float("inf"),
    positives: float | None = None,
) -> torch.Tensor:
    """``positive`` (P,), ``negative`` (P, K) ranking logits, ``weight`` (P,) -> scalar: the
    kept pairs' cost over ``positives * K`` pairs (``positives`` default: P, a mean)."""
    d = positive.unsqueeze(1) - negative
    cost = F.softplus(margin - d.clamp(min=-clip)) * weight.detach().unsqueeze(1)
    kept = d.detach() <= truncate
    pairs = (positive.shape[0] if positives is None else positives) * negative.shape[1]
    return per_row((cost * kept).sum(), pairs)


def truncation(step: int, start: float, end: float, steps: int) -> float:
    """The truncation margin at ``step``: linear from ``start`` to ``end`` over ``steps``, then
    ``end``. Starting wide lets every pair teach while the scores are still unformed."""
    if steps <= 0:
        return end
    frac = min(step / steps, 1.0)
    return start + (end - start) * frac
