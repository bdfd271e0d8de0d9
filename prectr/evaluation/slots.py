"""The new ranking's top k, slot by slot, and the expansion that off-policy estimates sum.

:mod:`prectr.evaluation.offpolicy` writes a new ranking's clicks under the dependent click
model as a sum of products of distinct items' attractions; :class:`Slots` holds, for every
request, which logged row sits at each of the new top k's slots and where the log showed it,
and sums the products down the ranking by a dynamic programme (:meth:`Slots.parts`): the
unbiased estimate of each supported slot's term (IPS) and, for the doubly robust estimate, the
supported part of each unsupported slot's product, which the direct method's attraction
completes (:meth:`Slots.dr_statistic`). The derivation is in the docstring of
:mod:`prectr.evaluation.offpolicy` and in docs/offpolicy.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from prectr.evaluation.logged import LoggedRows
from prectr.evaluation.propensity import Propensities, adjusted_clicks
from prectr.metrics.paired import BLOCK_CELLS, Statistic

PRIOR_EXAMINATIONS = 1.0  # pseudo-examinations (at position 1) of the prior in a pooled DM


@dataclass(frozen=True)
class Slots:
    """The new ranking's top k of every request, slot by slot: ``(R, k)`` arrays of the row at
    each slot (-1 past the end of a short pool) and, for slots the log showed in that request
    (supported), its logged position; per request the adjusted clicks by logged position."""

    rows: LoggedRows
    shown: np.ndarray  # (N,) rows shown at positions 1..k
    adjusted: np.ndarray  # (N,) adjusted clicks (:func:`adjusted_clicks`)
    row: np.ndarray  # (R, k)
    position: np.ndarray  # (R, k) logged position, 0 where unsupported or empty
    clicked_at: np.ndarray  # (R, k) adjusted click of the row logged at position j + 1
    after_click: float
    top_examination: float

    @classmethod
    def build(cls, rows: LoggedRows, score: np.ndarray, propensities: Propensities) -> Slots:
        k, after_click = propensities.k, propensities.after_click
        n = len(rows.request_ids)
        shown = rows.exposed & (rows.position <= k)
        position = np.where(shown, rows.position, 0)
        adjusted = adjusted_clicks(rows.request, position, rows.click * shown, after_click)
        rank = _ranks(rows.request, rows.item, score)
        top = rank <= k
        row = np.full((n, k), -1, np.int64)
        row[rows.request[top], rank[top] - 1] = np.flatnonzero(top)
        clicked_at = np.zeros((n, k))
        clicked_at[rows.request[shown], rows.position[shown] - 1] = adjusted[shown]
        slot_position = np.where(row >= 0, position[np.maximum(row, 0)], 0)
        return cls(rows, shown, adjusted, row, slot_position, clicked_at, after_click,
                   propensities.top_examination)  # fmt: skip

    @property
    def supported(self) -> np.ndarray:
        return self.position > 0

    @property
    def unsupported(self) -> np.ndarray:
        return (self.row >= 0) & (self.position == 0)

    @cached_property
    def slot_row(self) -> np.ndarray:
        """(R, k) the row at each slot, 0 in place of -1 (index with a mask of real slots)."""
        return np.maximum(self.row, 0)

    @cached_property
    def pooled(self) -> np.ndarray:
        """(R, k) unsupported slots whose (query, item) pair the log showed in another
        evaluated request."""
        shown_pairs = self.rows.pair[self.shown]
        return self.unsupported & np.isin(self.rows.pair[self.slot_row], shown_pairs)

    def parts(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(A, B)``, each (R, k), such that a request's estimate is ``sum_j theta_j U_j
        (alpha_j A_j + B_j)``: ``alpha_j`` the direct method's attraction of an unsupported slot
        (0 elsewhere) and ``U_j`` the product over unsupported slots above of ``1 - (1 -
        lambda) alpha / e_1``. ``B_j`` is the unbiased estimate of a supported slot's term
        (the module's expansion), ``A_j`` that of the supported part of an unsupported slot's
        product. Going down ``pi``, ``coef[:, m]`` holds the signed coefficient of the products
        of supported clicked items above whose deepest logged position is ``m`` (0: the empty
        product): their estimate is ``coef * reach[m]``, ``reach = c lambda^-n / theta_m``."""
        lam, (n, k) = self.after_click, self.row.shape
        reach = self.clicked_at / theta[None, :]  # c lambda^-n / theta_m by logged position m
        coef = np.zeros((n, k + 1))  # [:, 0]: the empty monomial; [:, m]: deepest at m
        coef[:, 0] = 1.0
        deepest = np.arange(k + 1)[None, :]
        a_part, b_part = np.zeros((n, k)), np.zeros((n, k))
        for j in range(k):
            a_part[:, j] = coef[:, 0] + (coef[:, 1:] * reach).sum(axis=1) / self.top_examination
            p = self.position[:, j]
            clicked = np.take_along_axis(reach, np.maximum(p - 1, 0)[:, None], 1)[:, 0] * (p > 0)
            upto = deepest <= p[:, None]
            mass = (coef * upto).sum(axis=1)
            below = (coef[:, 1:] * ~upto[:, 1:] * reach).sum(axis=1)
            b_part[:, j] = np.where(clicked > 0, clicked * mass + below, 0.0)
            if lam < 1.0:
                hit = (clicked > 0)[:, None]
                moved = np.where(upto, coef, lam * coef)
                moved[np.arange(n), p] -= (1.0 - lam) * mass
                coef = np.where(hit, moved, coef)
        return a_part, b_part

    def dr_statistic(
        self, theta: np.ndarray, prior: np.ndarray, parts: tuple[np.ndarray, np.ndarray]
    ) -> Statistic:
        """DR per resample: IPS on the supported slots, the direct method's attraction on the
        unsupported ones, in the click model's product. A slot whose (query, item) pair the log
        showed in other evaluated requests (pooled) takes that pair's adjusted clicks over its
        examination there, shrunk towards its prior with :data:`PRIOR_EXAMINATIONS`, under the
        resample's request weights; any other unsupported slot takes its prior. ``parts`` are
        :meth:`parts` of ``theta`` (IPS, computed once, needs them too)."""
        rows, lam, (a_part, b_part) = self.rows, self.after_click, parts
        n = len(rows.request_ids)
        unsupported, pooled, slot_row = self.unsupported, self.pooled, self.slot_row
        slot_pair = rows.pair[slot_row]
        groups = np.unique(rows.pair[self.shown])
        fixed = np.where(unsupported & ~pooled, prior[slot_row], 0.0)
        group = np.searchsorted(groups, slot_pair[pooled])
        member = self.shown & np.isin(rows.pair, groups[np.unique(group)])
        column = np.searchsorted(groups, rows.pair[member])
        shape = (n, groups.size)
        from scipy import sparse  # SciPy loads on use: `prectr --help` reads this module

        clicks = sparse.csc_matrix((self.adjusted[member], (rows.request[member], column)), shape)
        examined = theta[rows.position[member] - 1]
        examined = sparse.csc_matrix((examined, (rows.request[member], column)), shape)
        pooled_prior = PRIOR_EXAMINATIONS * prior[slot_row][pooled]

        def statistic(weights: np.ndarray) -> np.ndarray:
            out = np.empty(len(weights))
            step = max(1, BLOCK_CELLS // max(self.row.size, 1))
            for start in range(0, len(weights), step):
                w = weights[start : start + step]
                clicked, seen = (np.asarray((m.T @ w.T).T) for m in (clicks, examined))
                a = np.broadcast_to(fixed, (len(w), *fixed.shape)).copy()
                a[:, pooled] = (clicked[:, group] + pooled_prior) / (
                    seen[:, group] + PRIOR_EXAMINATIONS
                )
                stop = (1.0 - lam) / self.top_examination * a
                stay = np.cumprod(np.where(unsupported, 1.0 - stop, 1.0), axis=2)
                above = np.concatenate([np.ones((*stay.shape[:2], 1)), stay[:, :, :-1]], axis=2)
                value = (above * (a * a_part + b_part)) @ theta
                out[start : start + step] = (w * value).sum(axis=1) / w.sum(axis=1)
            return out

        return statistic

    def coverage(self, theta: np.ndarray, grade: np.ndarray) -> dict[str, float]:
        """How the new top k's examination (position part) splits: supported (shown in that
        request), pooled (the pair shown in other evaluated requests), graded and ungraded."""
        target = np.where(self.row >= 0, theta[None, :], 0.0)
        pooled = self.pooled
        rest = self.unsupported & ~pooled
        graded = grade[self.slot_row] >= 0
        total = target.sum()
        return {
            "supported": float(target[self.supported].sum() / total),
            "pooled": float(target[pooled].sum() / total),
            "graded": float(target[rest & graded].sum() / total),
            "ungraded": float(target[rest & ~graded].sum() / total),
        }


def _ranks(request: np.ndarray, item: np.ndarray, score: np.ndarray) -> np.ndarray:
    """1-based rank of each row within its request by descending score (ties: earlier item id)."""
    order = np.lexsort((item, -score, request))
    sorted_request = request[order]
    first = np.r_[True, sorted_request[1:] != sorted_request[:-1]]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, order.size])
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size) - np.repeat(starts, sizes) + 1
    return rank
