"""Off-policy estimate of a new ranking's clicks on a logged search log: no world, no A/B test.

What is estimated: expected clicks per request on the top ``k`` of a new ranking ``pi`` (scores
over each request's logged candidate pool). The click model is the dependent click model with
position-based examination: the user examines position 1 with probability ``e_1``, goes on from
``j`` to ``j + 1`` with probability ``e_{j+1} / e_j``, times ``lambda`` after a click
(:class:`~prectr.evaluation.propensity.Propensities` ``after_click``), and clicks an examined
item ``d`` with its attraction ``a(request, d)``. ``lambda = 1`` is the position-based model
(the default); a smaller ``lambda`` is an assumption the caller supplies (the log does not
identify it: docs/offpolicy.md), or a range of them (:mod:`prectr.evaluation.band`).
``theta = e / e_1`` is harvested from the log (:mod:`prectr.evaluation.propensity`). The clicks
of ``pi`` are

    sum_j theta_j alpha_j prod_{i < j} (1 - (1 - lambda) alpha_i / e_1),   alpha = e_1 a,

a sum of products of distinct items' attractions (``alpha``: clicks per unit of relative
examination).

**IPS.** For items the log showed in that request at positions ``1..k`` (the **supported** slots),
``prod_S c / (theta_m lambda^n)`` (every item of ``S`` clicked; ``m`` the deepest logged position
among them; ``n`` the clicks logged above ``m``) is unbiased for ``e_1^(1-|S|) prod_S alpha``, the
power of ``e_1`` the expansion gives that product, so each product has an unbiased estimate from the
logged clicks and ``e_1`` is not needed. :class:`~prectr.evaluation.slots.Slots` sums them by a
dynamic programme down ``pi``. With ``lambda = 1`` this is position-based IPS: a clicked row logged
at ``j`` and put at ``j'`` counts ``theta_j' / theta_j``. IPS is unbiased exactly when ``pi``'s top
k is a reordering of the items the log showed (validated against the world's replay by
``benchmarks/offpolicy.py``, and against every click outcome of small cases by
``tests/evaluation/test_offpolicy.py``). An item ``pi`` promotes from the unexposed part of the pool
(90 of a 100-candidate pool are never shown) has no click to reweight, and IPS counts it as
unattractive; :attr:`OffPolicyEstimate.coverage` says how much of ``pi``'s examination falls on
supported slots.

**Doubly robust.** IPS on the supported slots plus a direct method (DM) for the unsupported
ones: a predicted attraction in the same product (where ``lambda < 1``, ``e_1`` enters here:
:class:`Propensities` ``top_examination``). The prediction, in order of preference:

1. *pooled*: the same (query, item) pair shown in other requests of the evaluated log, its
   adjusted clicks over its examination (``sum c lambda^-n / sum theta_j``), shrunk towards
   (2) or (3) with :data:`PRIOR_EXAMINATIONS` pseudo-examinations, recomputed in every
   bootstrap resample, so the CI carries its noise (the item-position idea of Li,
   Abbasi-Yadkori, Kveton, Muthukrishnan, Vinay and Wen, *Offline Evaluation of Ranking
   Policies with Click Models*, KDD 2018, as a direct method);
2. *graded*: the pair has an observed relevance grade: the attraction of that grade;
3. *ungraded*: the mean attraction of an unshown candidate, from the grade mix of the graded
   unshown candidates.

(2) and (3) come from :class:`AttractionPrior`, fitted on a reference log (the training days).
Where every top-k slot is supported, DR equals IPS; elsewhere DR is only as right as the DM.
The DM knows the pool's attraction by grade, not by user or popularity, and the log's exposed
items of a grade are the more attractive ones (the logging ranker chose them), so on rankings
that promote unexposed candidates DR's error is the DM's, and it is measured, not removed
(docs/offpolicy.md).

**Confidence intervals**: percentile bootstrap over requests, the resamples of
:mod:`prectr.metrics.paired` (every estimate of one call sees the same resamples, so the lift
over the logged clicks is paired). Resample ``b`` also replaces the propensities of the IPS
part by their fit on resample ``b mod n`` of the reference log (:class:`Propensities`
``resamples``), so the CI carries the noise of the harvested propensities as well as the
clicks'; the direct method's prior and pooled attractions keep the full fit's propensities.
DR takes IPS's shift; with ``lambda < 1`` that is an approximation (the refit would also move
the supported terms' products with the unsupported slots above), exact at ``lambda = 1``.

**Why not Open Bandit Pipeline.** ``obp`` 0.5.7 (its latest release) requires Python < 3.11
and pins torch 1.12, numpy 1.23.5, scikit-learn 1.1.3 and scipy 1.9.3; this project runs
Python 3.11 with torch 2.13 and numpy 2 (``pip install --dry-run obp==0.5.7 torch==2.13.0``
fails: "requires a different Python: 3.11.7 not in '<3.11,>=3.8'"). Its slate estimators
(independent IPS) also weight by the logging *policy's* probability of each item at each
position, which a log of one noisy production ranker does not record; the examination weights
used here need only the click log. ``tests/evaluation/test_offpolicy.py`` checks these
estimators against an enumeration of every click outcome of a small case instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.evaluation.logged import LoggedRows, scores_in_row_order
from prectr.evaluation.propensity import Propensities, adjusted_clicks
from prectr.evaluation.slots import PRIOR_EXAMINATIONS, Slots
from prectr.metrics.paired import (
    RESAMPLES,
    Statistic,
    interval,
    mean_statistic,
    resample_weights,
)

GRADES = 4


@dataclass(frozen=True)
class AttractionPrior:
    """Attraction (clicks per unit of relative examination, position 1 = 1) of a candidate by
    its observed grade, and of an ungraded candidate the log did not show."""

    by_grade: np.ndarray
    ungraded: float

    @classmethod
    def fit(cls, impressions: pa.Table, propensities: Propensities) -> AttractionPrior:
        """Fit on a reference log's impressions (position, click, relevance; request_id when
        ``propensities.after_click < 1``): each grade's adjusted clicks over examination on rows
        shown at positions 1..k (shrunk towards all shown rows' with
        :data:`PRIOR_EXAMINATIONS`), then the grade mix of graded unshown rows."""
        dependent = propensities.after_click < 1.0
        for column in ("position", "click", "relevance") + (("request_id",) * dependent):
            if column not in impressions.column_names:
                raise ValueError(f"impressions: missing column {column}")
        position = impressions["position"].fill_null(0).to_numpy().astype(np.int64)
        grade = impressions["relevance"].fill_null(-1).to_numpy().astype(np.int64)
        shown = (position > 0) & (position <= propensities.k)
        click = impressions["click"].fill_null(0).to_numpy().astype(np.float64) * shown
        if dependent:
            request = pc.dictionary_encode(impressions["request_id"]).combine_chunks().indices
            click = adjusted_clicks(request.to_numpy().astype(np.int64), position * shown, click,
                                    propensities.after_click)  # fmt: skip
        if not shown.any():
            raise ValueError("impressions: no row shown within the propensities' positions")
        exam = propensities.examination[position[shown] - 1]
        overall = click[shown].sum() / exam.sum()
        graded = grade[shown] >= 0
        clicks = np.bincount(grade[shown][graded], click[shown][graded], minlength=GRADES)
        examined = np.bincount(grade[shown][graded], exam[graded], minlength=GRADES)
        by_grade = (clicks + PRIOR_EXAMINATIONS * overall) / (examined + PRIOR_EXAMINATIONS)
        unshown = (position == 0) & (grade >= 0)
        if not unshown.any():
            return cls(by_grade, float(overall))
        mix = np.bincount(grade[unshown], minlength=GRADES) / unshown.sum()
        return cls(by_grade, float(mix @ by_grade))

    def predict(self, grade: np.ndarray) -> np.ndarray:
        """Attraction of candidates with observed ``grade`` (-1: unknown)."""
        return np.where(grade >= 0, self.by_grade[np.maximum(grade, 0)], self.ungraded)

    def to_dict(self) -> dict:
        return {"by_grade": self.by_grade.tolist(), "ungraded": self.ungraded}


@dataclass(frozen=True)
class Estimate:
    """A value on all requests and its percentile bootstrap CI."""

    value: float
    lo: float
    hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class OffPolicyEstimate:
    """Expected clicks per request on a new ranking's top k, by IPS and by DR; the clicks the
    log shows on its own top k; each estimate minus the logged clicks (paired); and how the
    new top k's examination splits: supported (shown in that request), pooled (the pair shown
    in other requests), graded and ungraded (the prior)."""

    n_requests: int
    k: int
    ips: Estimate
    dr: Estimate
    logged: Estimate
    ips_lift: Estimate
    dr_lift: Estimate
    coverage: dict[str, float]

    def to_dict(self) -> dict:
        out: dict = {"n_requests": self.n_requests, "k": self.k}
        for name in ("ips", "dr", "logged", "ips_lift", "dr_lift"):
            out[name] = getattr(self, name).to_dict()
        return out | {"coverage": self.coverage}


@dataclass(frozen=True)
class OffPolicyStatistics:
    """The estimators as statistics of request weights (:mod:`prectr.metrics.paired`):
    ``ips``, ``dr`` and ``logged`` (the log's own clicks on its top k), so that they can be
    bootstrapped beside, and paired with, other statistics of the same requests; and
    ``refit_ips`` (fits, requests): each request's IPS under the propensities of each
    resample fit."""

    statistics: dict[str, Statistic]
    n_requests: int
    k: int
    coverage: dict[str, float]
    refit_ips: np.ndarray

    def ips_shift(self, weights: np.ndarray, refit: np.ndarray) -> np.ndarray:
        """How much IPS under request ``weights`` (b, R) changes when the propensities become
        those of resample fits ``refit`` (b indices into ``refit_ips``) instead of the full
        fit's."""
        full = self.statistics["ips"](weights)
        return (weights * self.refit_ips[refit]).sum(axis=1) / weights.sum(axis=1) - full


def offpolicy_statistics(
    impressions: pa.Table,
    requests: pa.Table,
    scores: pa.Table,
    propensities: Propensities,
    prior: AttractionPrior,
) -> OffPolicyStatistics:
    """The statistics of ranking each request's candidates by ``scores`` (request_id, item_id,
    score: every candidate of ``impressions``; ties go to the earlier item id), from the
    evaluated requests' logged ``impressions`` (request_id, item_id, position, click,
    relevance) and ``requests`` (request_id, query)."""
    rows = LoggedRows.from_tables(impressions, requests)
    k, theta = propensities.k, propensities.examination
    slots = Slots.build(
        rows,
        scores_in_row_order(impressions["request_id"], impressions["item_id"], scores),
        propensities,
    )
    n = len(rows.request_ids)
    each = np.arange(n)
    parts = slots.parts(theta)
    statistics = {
        "ips": mean_statistic(parts[1] @ theta, each),
        "dr": slots.dr_statistic(theta, prior.predict(rows.grade), parts),
        "logged": mean_statistic(np.bincount(rows.request, rows.click * slots.shown, n), each),
    }
    refits = np.array([slots.parts(e)[1] @ e for e in propensities.resamples]).reshape(-1, n)
    return OffPolicyStatistics(statistics, n, k, slots.coverage(theta, rows.grade), refits)


def offpolicy_clicks(
    impressions: pa.Table,
    requests: pa.Table,
    scores: pa.Table,
    propensities: Propensities,
    prior: AttractionPrior,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> OffPolicyEstimate:
    """Estimate the clicks per request of ranking each request's candidates by ``scores``
    (arguments as :func:`offpolicy_statistics`), with percentile CIs over ``n_resamples``
    bootstrap resamples of the requests."""
    found = offpolicy_statistics(impressions, requests, scores, propensities, prior)
    n, refits = found.n_requests, len(found.refit_ips)
    names = ("ips", "dr", "logged")
    value = {name: found.statistics[name](np.ones((1, n)))[0] for name in names}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in names}
    done = 0
    for weights in resample_weights(n, n_resamples, seed):
        shift = np.zeros(len(weights))
        if refits:
            shift = found.ips_shift(weights, (done + np.arange(len(weights))) % refits)
        for name in names:
            draws[name].append(found.statistics[name](weights) + (shift if name != "logged" else 0))
        done += len(weights)
    drawn = {name: np.concatenate(d) for name, d in draws.items()}

    def estimate(name: str, minus: str | None = None) -> Estimate:
        if minus is None:
            return Estimate(value[name], *interval(drawn[name]))
        return Estimate(value[name] - value[minus], *interval(drawn[name] - drawn[minus]))

    return OffPolicyEstimate(
        n_requests=found.n_requests,
        k=found.k,
        ips=estimate("ips"),
        dr=estimate("dr"),
        logged=estimate("logged"),
        ips_lift=estimate("ips", "logged"),
        dr_lift=estimate("dr", "logged"),
        coverage=found.coverage,
    )
