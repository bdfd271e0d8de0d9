"""The off-policy estimate over a range of the after-click factor ``lambda``: a sensitivity band.

The dependent click model's ``lambda`` (how much less often a user goes on after a click) moves
the off-policy estimate of any ranking that changes the order of clicked items, and the log does
not identify it (docs/offpolicy.md: two experiments refuted). So instead of one estimate at one
assumed ``lambda``, the band estimates at a grid of ``lambda`` over a range the user can defend
(:func:`after_click_grid`: ends included; ``lambda = 1`` is the position-based model), each with
its own harvested propensities and attraction prior and the same bootstrap resamples of the
requests, and reports each estimator's **band**: the lowest 95% CI lower end and the highest
upper end over the grid, with the ``lambda`` at each end (partial identification: Manski,
*Partial Identification of Probability Distributions*, 2003, here over one unidentified
parameter).

What it guarantees: wherever the true ``lambda`` is a grid point and the estimate at it covers
the clicks, the band covers them too (it contains every grid point's CI). Nothing more: a true
``lambda`` between grid points has a CI the band need not contain, even where the ends move one
way along the grid (:meth:`OffPolicyBand.monotone` is a diagnostic, not a certificate: on the
``bench`` worlds a CI at 0.5 reaches below a monotone band over 0.4, 0.6, 0.8 and 1;
docs/offpolicy.md). What it does not: a ``lambda`` outside the range, or a ranking the
estimate itself does not cover (unsupported slots: docs/offpolicy.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from numbers import Real

import numpy as np
import pyarrow as pa

from prectr.evaluation.offpolicy import AttractionPrior, OffPolicyEstimate, offpolicy_clicks
from prectr.evaluation.propensity import (
    RESAMPLES,
    Propensities,
    check_click_model,
    harvest_propensities,
)
from prectr.metrics.paired import RESAMPLES as BOOTSTRAP_RESAMPLES

BAND_POINTS = 7  # grid points of a range LO:HI, ends included ([0.4, 1]: steps of 0.1)
BANDED = ("ips", "dr", "ips_lift", "dr_lift")  # the estimates that move with lambda


def after_click_grid(lo: float, hi: float, points: int = BAND_POINTS) -> tuple[float, ...]:
    """``points`` values of ``lambda`` evenly spaced over [``lo``, ``hi``], ends included (one
    value where ``lo == hi``); each in (0, 1]."""
    for value in (lo, hi):
        check_click_model(value, 1.0)
    if lo > hi:
        raise ValueError(f"after_click range {lo:g}:{hi:g}: the low end is above the high end")
    if lo == hi:
        return (float(lo),)
    if points < 2:
        raise ValueError(f"after_click range {lo:g}:{hi:g}: needs at least 2 points, got {points}")
    return tuple(float(x) for x in np.round(np.linspace(lo, hi, points), 12))


def after_click_points(after_click: float | Sequence[float]) -> tuple[float, ...]:
    """The values of ``lambda`` an ``after_click`` argument names: one value (a Python or numpy
    number), or a grid (a sequence, at least one point)."""
    if isinstance(after_click, Real):
        return (float(after_click),)
    if len(after_click) == 0:
        raise ValueError("after_click: an empty grid (give one value or at least one point)")
    return tuple(float(x) for x in after_click)


def parse_after_click(text: str) -> float | tuple[float, ...]:
    """``--after-click``: one value ``LAMBDA`` (a float), or a range ``LO:HI`` (the grid of
    :data:`BAND_POINTS` points) or ``LO:HI:N`` (``N`` points). Raises a ValueError naming the
    option on anything else."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            value = float(parts[0])
            check_click_model(value, 1.0)
            return value
        if len(parts) not in (2, 3):
            raise ValueError("expected LAMBDA, LO:HI or LO:HI:N")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            points = int(parts[2]) if len(parts) == 3 else BAND_POINTS
        except ValueError:
            raise ValueError(
                "expected LAMBDA, LO:HI or LO:HI:N (LO, HI numbers, N a count)"
            ) from None
        return after_click_grid(lo, hi, points)
    except ValueError as err:
        raise ValueError(f"--after-click {text}: {err}") from None


@dataclass(frozen=True)
class Band:
    """The lowest CI lower end and the highest CI upper end of one estimate over a grid of
    ``lambda``, and the ``lambda`` at which each is reached."""

    lo: float
    hi: float
    after_click_lo: float
    after_click_hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def to_dict(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi, "after_click_lo": self.after_click_lo,
                "after_click_hi": self.after_click_hi}  # fmt: skip


@dataclass(frozen=True)
class OffPolicyBand:
    """The off-policy estimate at each ``lambda`` of a grid (strictly ascending: a ``lambda``
    twice is refused), with the fits it used."""

    after_click: tuple[float, ...]
    estimates: tuple[OffPolicyEstimate, ...]
    propensities: tuple[Propensities, ...]

    def __post_init__(self) -> None:
        if any(a >= b for a, b in pairwise(self.after_click)):
            raise ValueError(f"after_click grid {list(self.after_click)}: not strictly ascending "
                             "(each lambda once, in order)")  # fmt: skip

    def band(self, name: str) -> Band:
        """The band of estimate ``name`` (one of :data:`BANDED`)."""
        lo = [getattr(e, name).lo for e in self.estimates]
        hi = [getattr(e, name).hi for e in self.estimates]
        low, high = int(np.argmin(lo)), int(np.argmax(hi))
        return Band(lo[low], hi[high], self.after_click[low], self.after_click[high])

    def monotone(self, name: str) -> bool:
        """Whether each CI end of ``name`` moves in one direction along the grid (each end of the
        band then sits at an end of the range). A diagnostic of how the estimate moves with
        ``lambda``, not a certificate: the CI at a ``lambda`` between grid points may still reach
        past the band."""
        ends = np.array([[getattr(e, name).lo, getattr(e, name).hi] for e in self.estimates])
        steps = np.diff(ends, axis=0)
        return bool(((steps >= 0).all(axis=0) | (steps <= 0).all(axis=0)).all())

    def at(self, after_click: Sequence[float]) -> OffPolicyBand:
        """The band over the points ``after_click`` of this grid (a sub-range estimated once;
        a point named twice is taken once)."""
        index = {round(lam, 9): i for i, lam in enumerate(self.after_click)}
        missing = [lam for lam in after_click if round(lam, 9) not in index]
        if missing:
            raise ValueError(f"after_click {missing}: not in the grid {list(self.after_click)}")
        keep = sorted({index[round(lam, 9)] for lam in after_click})
        return OffPolicyBand(
            tuple(self.after_click[i] for i in keep),
            tuple(self.estimates[i] for i in keep),
            tuple(self.propensities[i] for i in keep),
        )

    def to_dict(self) -> dict:
        """``after_click`` (the grid), ``band`` (per estimate of :data:`BANDED`, with
        ``monotone``), ``logged`` (the log's own clicks, the same at every point), and ``grid``:
        each point's estimate and harvested examination."""
        first = self.estimates[0]
        return {
            "n_requests": first.n_requests,
            "k": first.k,
            "after_click": list(self.after_click),
            "band": {
                name: self.band(name).to_dict() | {"monotone": self.monotone(name)}
                for name in BANDED
            },
            "logged": first.logged.to_dict(),
            "grid": [
                {"after_click": lam, "examination": p.examination.tolist()}
                | {name: getattr(e, name).to_dict() for name in BANDED}
                | {"coverage": e.coverage}
                for lam, e, p in zip(
                    self.after_click, self.estimates, self.propensities, strict=True
                )
            ],
        }


def fit_grid(
    reference: pa.Table,
    requests: pa.Table,
    after_click: Sequence[float],
    top_examination: float = 1.0,
    k: int = 10,
    n_refits: int = RESAMPLES,
    seed: int = 0,
) -> list[tuple[Propensities, AttractionPrior]]:
    """Propensities harvested from the ``reference`` log's impressions (the training days) with
    clicks adjusted at each ``lambda`` of ``after_click``, and the attraction prior fitted
    under each (:func:`~prectr.evaluation.propensity.harvest_propensities`,
    :meth:`AttractionPrior.fit`)."""
    fits = []
    for lam in after_click:
        propensities = harvest_propensities(reference, requests, k, n_refits, seed, lam,
                                            top_examination)  # fmt: skip
        fits.append((propensities, AttractionPrior.fit(reference, propensities)))
    return fits


def offpolicy_band(
    impressions: pa.Table,
    requests: pa.Table,
    scores: pa.Table,
    fits: Sequence[tuple[Propensities, AttractionPrior]],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> OffPolicyBand:
    """The off-policy estimate (:func:`~prectr.evaluation.offpolicy.offpolicy_clicks`, same
    arguments) under each fit of :func:`fit_grid`, every one on the same bootstrap resamples,
    sorted by ``lambda``."""
    if not fits:
        raise ValueError("offpolicy_band needs at least one fit (a grid of after_click)")
    ordered = sorted(fits, key=lambda fit: fit[0].after_click)
    estimates = tuple(
        offpolicy_clicks(impressions, requests, scores, propensities, prior, n_resamples, seed)
        for propensities, prior in ordered
    )
    return OffPolicyBand(
        tuple(p.after_click for p, _ in ordered), estimates, tuple(p for p, _ in ordered)
    )
