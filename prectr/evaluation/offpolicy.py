"""Off-policy estimate of a new ranking's clicks on a logged search log: no world, no A/B test.

What is estimated: expected clicks per request on the top ``k`` of a new ranking ``pi`` (scores
over each request's logged candidate pool), under the position-based model: a click on item
``d`` at position ``j`` has probability ``p_j * a(request, d)``, examination times attraction.
``p`` is harvested from the log (:mod:`prectr.evaluation.propensity`); only its ratios matter.

**Position-based IPS.** A row the log showed at position ``j <= k`` and ``pi`` puts at position
``j' <= k`` contributes its logged click times ``p_j' / p_j``; per request, the sum over rows.
Its expectation over the clicks is ``sum p_j' a(request, d)`` over ``pi``'s top-k items that
the log *showed in that request*: the **supported** slots. An item ``pi`` promotes from the
unexposed part of the pool (90 of a 100-candidate pool are never shown) has no click to
reweight, and IPS counts nothing for it. So IPS is unbiased for the clicks of ``pi``'s supported
slots, which is the whole of ``pi``'s clicks exactly when ``pi``'s top k is a reordering of the
items the log showed (validated against the world's replay on position-based click logs by
``benchmarks/offpolicy.py``; biased where a click stops the user, as under ``dcm``); otherwise
it is a lower bound, and :attr:`OffPolicyEstimate.coverage` says how much of ``pi``'s
examination falls on supported slots.

**Doubly robust.** IPS on the supported slots plus a direct method (DM) for the unsupported
ones: ``p_j'`` times a predicted attraction. The prediction, in order of preference:

1. *pooled*: the same (query, item) pair shown in other requests of the evaluated log, its
   clicks over its examination (``sum clicks / sum p_j``), shrunk towards (2) or (3) with
   :data:`PRIOR_EXAMINATIONS` pseudo-examinations, recomputed in every bootstrap resample, so
   the CI carries its noise (the item-position idea of Li, Abbasi-Yadkori, Kveton,
   Muthukrishnan, Vinay and Wen, *Offline Evaluation of Ranking Policies with Click Models*,
   KDD 2018, as a direct method);
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
from scipy import sparse

from prectr.evaluation.logged import LoggedRows
from prectr.evaluation.propensity import Propensities
from prectr.metrics.paired import (
    BLOCK_CELLS,
    RESAMPLES,
    Statistic,
    interval,
    mean_statistic,
    resample_weights,
)

PRIOR_EXAMINATIONS = 1.0  # pseudo-examinations (at position 1) of the prior in a pooled DM
GRADES = 4


@dataclass(frozen=True)
class AttractionPrior:
    """Attraction (clicks per unit of relative examination, position 1 = 1) of a candidate by
    its observed grade, and of an ungraded candidate the log did not show."""

    by_grade: np.ndarray
    ungraded: float

    @classmethod
    def fit(cls, impressions: pa.Table, propensities: Propensities) -> AttractionPrior:
        """Fit on a reference log's impressions (position, click, relevance): each grade's
        clicks over examination on rows shown at positions 1..k (shrunk towards all shown rows'
        with :data:`PRIOR_EXAMINATIONS`), then the grade mix of graded unshown rows."""
        for column in ("position", "click", "relevance"):
            if column not in impressions.column_names:
                raise ValueError(f"impressions: missing column {column}")
        position = impressions["position"].fill_null(0).to_numpy().astype(np.int64)
        click = impressions["click"].fill_null(0).to_numpy().astype(np.float64)
        grade = impressions["relevance"].fill_null(-1).to_numpy().astype(np.int64)
        shown = (position > 0) & (position <= propensities.k)
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
    bootstrapped beside, and paired with, other statistics of the same requests."""

    statistics: dict[str, Statistic]
    n_requests: int
    k: int
    coverage: dict[str, float]
    moved: sparse.csc_matrix  # (R, k * k) clicks moved from logged position b to new rank a

    def ips_shift(self, weights: np.ndarray, examination: np.ndarray) -> np.ndarray:
        """How much IPS under request ``weights`` (b, R) changes when the propensities become
        ``examination`` (b, k), one row per resample, instead of the full fit's."""
        moved = np.asarray((self.moved.T @ weights.T).T)  # (b, k * k)
        ratio = examination[:, :, None] / examination[:, None, :]
        return (moved * ratio.reshape(len(ratio), -1)).sum(axis=1) / weights.sum(axis=1)


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
    score = _aligned(impressions, scores)
    k, theta = propensities.k, propensities.examination
    rank = _ranks(rows.request, rows.item, score)
    target = np.where(rank <= k, theta[np.minimum(rank, k) - 1], 0.0)
    shown = rows.exposed & (rows.position <= k)
    logged = np.where(shown, theta[np.clip(rows.position, 1, k) - 1], 0.0)
    parts = _Parts.build(rows, target, logged, prior.predict(rows.grade))
    n = len(rows.request_ids)
    each = np.arange(n)
    statistics = {
        "ips": mean_statistic(parts.ips, each),
        "dr": parts.dr_statistic(),
        "logged": mean_statistic(np.bincount(rows.request, rows.click * shown, n), each),
    }
    moved = _moves(rows.request, rank, rows.position, rows.click, logged > 0, n, k)
    return OffPolicyStatistics(statistics, n, k, parts.coverage, moved)


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
    n, fitted, refits = found.n_requests, propensities.examination, propensities.resamples
    names = ("ips", "dr", "logged")
    value = {name: found.statistics[name](np.ones((1, n)))[0] for name in names}
    draws: dict[str, list[np.ndarray]] = {name: [] for name in names}
    done = 0
    for weights in resample_weights(n, n_resamples, seed):
        shift = np.zeros(len(weights))
        if len(refits):
            refit = refits[(done + np.arange(len(weights))) % len(refits)]
            shift = found.ips_shift(weights, refit) - found.ips_shift(weights, fitted[None])
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


@dataclass(frozen=True)
class _Parts:
    """Per request: IPS and the fixed-prior DM sum; per (request, pooled pair): the sparse
    sums the pooled DM needs under any request weights."""

    ips: np.ndarray  # (R,)
    fixed: np.ndarray  # (R,) sum of target x prior over unsupported slots with no pooled pair
    target: sparse.csc_matrix  # (R, G) target examination of unsupported slots
    target_prior: sparse.csc_matrix  # (R, G) ... times their prior attraction
    clicks: sparse.csc_matrix  # (R, G) clicks of the pair's shown rows
    examined: sparse.csc_matrix  # (R, G) logged examination of the pair's shown rows
    coverage: dict[str, float]

    @classmethod
    def build(
        cls, rows: LoggedRows, target: np.ndarray, logged: np.ndarray, prior: np.ndarray
    ) -> _Parts:
        n = len(rows.request_ids)
        supported = logged > 0
        weight = np.divide(target, logged, out=np.zeros_like(target), where=supported)
        unsupported = (target > 0) & ~supported
        shown_pairs = np.unique(rows.pair[supported])
        pooled = unsupported & np.isin(rows.pair, shown_pairs)
        groups, group = np.unique(rows.pair[pooled], return_inverse=True)
        member = supported & np.isin(rows.pair, groups)
        member_group = np.searchsorted(groups, rows.pair[member])

        def matrix(values: np.ndarray, where: np.ndarray, column: np.ndarray):
            shape = (n, groups.size)
            return sparse.csc_matrix((values[where], (rows.request[where], column)), shape=shape)

        fixed = unsupported & ~pooled
        total = target.sum()
        return cls(
            ips=np.bincount(rows.request, rows.click * weight, n),
            fixed=np.bincount(rows.request[fixed], (target * prior)[fixed], n),
            target=matrix(target, pooled, group),
            target_prior=matrix(target * prior, pooled, group),
            clicks=matrix(rows.click, member, member_group),
            examined=matrix(logged, member, member_group),
            coverage={
                "supported": float(target[supported].sum() / total),
                "pooled": float(target[pooled].sum() / total),
                "graded": float(target[fixed & (rows.grade >= 0)].sum() / total),
                "ungraded": float(target[fixed & (rows.grade < 0)].sum() / total),
            },
        )

    def dr_statistic(self) -> Statistic:
        """DR per resample: (IPS + fixed DM + pooled DM) summed with request weights over the
        weight total; a pooled pair's attraction is its weighted clicks over weighted
        examination, shrunk towards its slots' prior."""
        base = self.ips + self.fixed
        n_groups = self.target.shape[1]

        def statistic(weights: np.ndarray) -> np.ndarray:
            out = weights @ base
            step = max(1, BLOCK_CELLS // max(n_groups, 1))
            for start in range(0, weights.shape[0], step):
                w = weights[start : start + step]
                target, target_prior, clicks, examined = (
                    np.asarray((m.T @ w.T).T)
                    for m in (self.target, self.target_prior, self.clicks, self.examined)
                )
                pooled = (target * clicks + PRIOR_EXAMINATIONS * target_prior) / (
                    examined + PRIOR_EXAMINATIONS
                )
                out[start : start + step] += pooled.sum(axis=1)
            return out / weights.sum(axis=1)

        return statistic


def _moves(
    request: np.ndarray,
    rank: np.ndarray,
    position: np.ndarray,
    click: np.ndarray,
    supported: np.ndarray,
    n: int,
    k: int,
) -> sparse.csc_matrix:
    """Per request, the clicks of supported rows by (new rank a, logged position b), as column
    ``(a - 1) * k + b - 1`` of an (n, k * k) matrix: IPS is this matrix times p_a / p_b."""
    kept = supported & (rank <= k)
    column = (rank[kept] - 1) * k + position[kept] - 1
    return sparse.csc_matrix((click[kept], (request[kept], column)), shape=(n, k * k))


def _aligned(impressions: pa.Table, scores: pa.Table) -> np.ndarray:
    """The score of every impression row, in row order."""
    missing = [c for c in ("request_id", "item_id", "score") if c not in scores.column_names]
    if missing:
        raise ValueError(f"scores: missing column(s) {', '.join(missing)}")
    keys = pa.table(
        {
            "request_id": impressions["request_id"],
            "item_id": impressions["item_id"],
            "row": np.arange(impressions.num_rows),
        }
    )
    joined = keys.join(scores.select(["request_id", "item_id", "score"]),
                       ["request_id", "item_id"], join_type="left outer")  # fmt: skip
    if joined.num_rows != keys.num_rows:
        raise ValueError("scores: a (request_id, item_id) pair is scored more than once")
    score = joined.sort_by("row")["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    absent = np.isnan(score)
    if absent.any():
        raise ValueError(
            f"scores: {int(absent.sum())} of the {score.size} logged candidates have no score "
            "(or a NaN one); every candidate of every evaluated request needs one"
        )
    return score


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
