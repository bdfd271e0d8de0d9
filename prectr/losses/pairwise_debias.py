"""PRECTR-V2's pairwise exposure-bias correction: clicked items above their hard negatives.

Each positive ``i`` (a clicked impression) is paired with up to ``K`` negatives ``j``
(synthetic: its relevance embedding moved towards a real low-grade candidate's; or unexposed
candidates of its request, which a request may lack: ``valid`` marks the real pairs, and a
positive with none contributes nothing, neither cost nor count). With
``d = s_i - s_j`` the difference of ranking logits, a pair costs
``w_i * softplus(margin - max(d, -clip))``:

* **margin**: the pair keeps a (decaying) cost until the positive leads by about ``margin``;
* **margin clipping**: ``d`` is clipped from below at ``-clip``, so a pair the model ranks
  badly wrong (often a click on a truly irrelevant item, i.e. noise) costs at most
  ``softplus(margin + clip)`` and gives no gradient, instead of dominating the batch;
* **dynamic truncation**: pairs already ordered by more than ``truncate`` are dropped, and the
  sum is divided by the number of *all* real pairs (truncated or not), so the term fades as
  the pairs are learnt and cannot swamp the click loss; ``truncate`` follows a schedule
  (see :func:`truncation`);
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
    valid: torch.Tensor | None = None,
    pairs: float | None = None,
) -> torch.Tensor:
    """``positive`` (P,), ``negative`` (P, K) ranking logits, ``weight`` (P,), ``valid`` (P, K)
    the real pairs (default: all) -> scalar: the kept real pairs' cost over ``pairs`` pairs
    (default: the real pairs given, a mean; under DDP, the step's real pairs per process)."""
    d = positive.unsqueeze(1) - negative
    cost = F.softplus(margin - d.clamp(min=-clip)) * weight.detach().unsqueeze(1)
    kept = d.detach() <= truncate
    if valid is not None:
        kept = kept & valid
    if pairs is None:
        pairs = float(negative.numel() if valid is None else valid.sum())
    # where() rather than a product: a masked-out pair's cost (an arbitrary partner) gives no NaN
    return per_row(torch.where(kept, cost, 0.0).sum(), pairs)


def truncation(step: int, start: float, end: float, steps: int) -> float:
    """The truncation margin at ``step``: linear from ``start`` to ``end`` over ``steps``, then
    ``end``. Starting wide lets every pair teach while the scores are still unformed."""
    if steps <= 0:
        return end
    frac = min(step / steps, 1.0)
    return start + (end - start) * frac
