"""Paired bootstrap over requests: how much two rankings of the same requests differ, with a CI.

The resampling unit is the request: all rows of a request (its exposed impressions, its pool)
move together, since they share a user, a query and one draw of the click model. A resample is
a vector of multinomial counts over the R requests (how often each is drawn in R draws with
replacement), and a metric of the resample is the metric of the rows weighted by their request's
count: exactly the metric of the resampled data set, drawn requests repeated. Every statistic of
both models, on every slice, sees the same resamples, so differences are paired and a seed's
draws can be averaged with another seed's draws of the same index (same world, same seed: same
resamples) to bootstrap a mean over seeds.

A statistic is prepared once per model (one sort of its scores) and then maps a block of
resample weights ``(b, R)`` to ``b`` values with cumulative weighted sums only; blocks of
resamples bound memory (:data:`BLOCK_CELLS` rows x resamples at a time).

Why not ``scipy.stats.bootstrap``: it materialises each resample of the data and calls the
statistic on it, so an exact AUC over a million rows costs a sort per resample, and it draws new
resamples for every call, so many metrics and slices cannot share (pair on) the same resamples.
With weights, all resamples share one sort and the same weights serve every statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from prectr.metrics.groups import sort_within_groups

RESAMPLES = 1000
CONFIDENCE = 0.95
WEIGHT_BLOCK = 50  # resamples drawn per block of weights
BLOCK_CELLS = 1 << 22  # rows x resamples one statistic holds at once (32 MB per float64 array)

#: Request weights ``(b, R)`` -> the metric under each of the ``b`` resamples.
Statistic = Callable[[np.ndarray], np.ndarray]


def resample_weights(
    n_requests: int, n_resamples: int = RESAMPLES, seed: int = 0, block: int = WEIGHT_BLOCK
) -> Iterator[np.ndarray]:
    """Blocks of at most ``block`` resamples: multinomial counts over ``n_requests`` requests
    (each row sums to ``n_requests``), the same blocks for the same arguments."""
    if n_requests < 1 or n_resamples < 1:
        raise ValueError(f"need requests and resamples, got {n_requests} and {n_resamples}")
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        drawn = rng.integers(0, n_requests, size=(b, n_requests))
        drawn += n_requests * np.arange(b)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=b * n_requests)
        yield counts.reshape(b, n_requests).astype(np.float64)


def _row_blocks(weights: np.ndarray, rows: int) -> Iterator[slice]:
    step = max(1, BLOCK_CELLS // max(rows, 1))
    for start in range(0, weights.shape[0], step):
        yield slice(start, start + step)


class WeightedGroupAUC:
    """Exact AUC within each group of rows (ties count one half) under request weights.

    The rows are sorted once by (group, score) and cut into runs of tied scores. Under weights
    ``w`` (each row weighs its request's weight), a group's AUC is the weighted sum over its
    positives of (weight of its negatives in lower runs + half that of its own run), over
    (positive weight x negative weight): per-run weighted sums, one sparse product of the
    weights with each run's count of positives (and of negatives) per request, and one
    cumulative sum per resample. With every weight 1 it is :func:`prectr.metrics.group_auc`.
    With resample counts as weights and 0/1 labels (clicks) every sum is of integers, exact in
    any order: the same values as summing row by row.
    """

    def __init__(
        self, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, request: np.ndarray
    ):
        labels = np.asarray(labels, dtype=np.float64)
        scores = np.asarray(scores, dtype=np.float64)
        if not labels.shape == scores.shape == np.shape(groups) == np.shape(request):
            raise ValueError("labels, scores, groups and request must be 1-d of one length")
        order, code, _ = sort_within_groups(groups, scores)
        s, label = scores[order], labels[order]
        request = np.asarray(request, dtype=np.int64)[order]
        run_start = np.r_[True, (code[1:] != code[:-1]) | (s[1:] != s[:-1])][: s.size]
        run_first = np.flatnonzero(run_start)
        self.run_group = code[run_first]
        new_group = np.r_[True, self.run_group[1:] != self.run_group[:-1]][: self.run_group.size]
        self.group_first_run = np.flatnonzero(new_group)
        self.n_groups = self.group_first_run.size
        # (run, request) -> the run's positive (negative) rows of that request
        run = np.cumsum(run_start) - 1
        shape = (run_first.size, int(request.max(initial=-1)) + 1)
        from scipy import sparse  # SciPy loads on use: `prectr --help` reads this module

        self.positives = sparse.csr_array((label, (run, request)), shape=shape)
        self.negatives = sparse.csr_array((1.0 - label, (run, request)), shape=shape)

    def __call__(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per resample and group ``(b, G)``: the AUC (nan for a group with one class under
        that resample), the positives' weight and the negatives' weight."""
        b = weights.shape[0]
        num, pos, neg = (np.zeros((b, self.n_groups)) for _ in range(3))
        if self.n_groups == 0:
            return num, pos, neg
        first = self.group_first_run
        for rows in _row_blocks(weights, self.positives.shape[0]):
            w = weights[rows, : self.positives.shape[1]].T  # (requests, b)
            pos_run, neg_run = self.positives @ w, self.negatives @ w  # (runs, b)
            below = np.cumsum(neg_run, axis=0) - neg_run  # negatives of every earlier run
            if self.n_groups > 1:
                below -= below[first][self.run_group]  # ... of this group only
            num[rows] = np.add.reduceat(pos_run * (below + 0.5 * neg_run), first, axis=0).T
            pos[rows] = np.add.reduceat(pos_run, first, axis=0).T
            neg[rows] = np.add.reduceat(neg_run, first, axis=0).T
        both = (pos > 0) & (neg > 0)
        auc = np.divide(num, pos * neg, out=np.full_like(num, np.nan), where=both)
        return auc, pos, neg


def auc_statistic(labels: np.ndarray, scores: np.ndarray, request: np.ndarray) -> Statistic:
    """Exact AUC of all rows (``request``: each row's request index into the weights)."""
    prepared = WeightedGroupAUC(labels, scores, np.zeros(np.size(labels), np.int64), request)

    def statistic(weights: np.ndarray) -> np.ndarray:
        if prepared.n_groups == 0:
            return np.full(weights.shape[0], np.nan)
        return prepared(weights)[0][:, 0]

    return statistic


def gauc_statistic(
    labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, request: np.ndarray
) -> Statistic:
    """Impression-weighted GAUC: groups' AUCs averaged with their (weighted) row counts, groups
    holding one class skipped, as :func:`prectr.metrics.gauc`."""
    prepared = WeightedGroupAUC(labels, scores, groups, request)

    def statistic(weights: np.ndarray) -> np.ndarray:
        auc, pos, neg = prepared(weights)
        eligible = ~np.isnan(auc)
        size = np.where(eligible, pos + neg, 0.0)
        total = size.sum(axis=1)
        weighted = np.where(eligible, auc * size, 0.0).sum(axis=1)
        return np.divide(weighted, total, out=np.full(total.shape, np.nan), where=total > 0)

    return statistic


def ratio_statistic(
    numerator: np.ndarray, denominator: np.ndarray, request: np.ndarray
) -> Statistic:
    """sum(w * numerator) / sum(w * denominator) over entries (rows or requests) with their
    request's weight ``w``: a mean of per-row values (denominator 1), or of per-request values,
    or a ratio of sums such as calibration. nan where the denominator sums to 0."""
    request = np.asarray(request, dtype=np.int64)
    keys, code = np.unique(request, return_inverse=True)
    num = np.bincount(code, weights=np.asarray(numerator, np.float64), minlength=keys.size)
    den = np.bincount(code, weights=np.asarray(denominator, np.float64), minlength=keys.size)

    def statistic(weights: np.ndarray) -> np.ndarray:
        w = weights[:, keys]
        top, bottom = w @ num, w @ den
        return np.divide(top, bottom, out=np.full(top.shape, np.nan), where=bottom != 0)

    return statistic


def mean_statistic(
    values: np.ndarray, request: np.ndarray, eligible: np.ndarray | None = None
) -> Statistic:
    """The mean of per-entry ``values`` (per request or per row) over the ``eligible`` ones."""
    keep = np.ones(np.size(values), bool) if eligible is None else np.asarray(eligible, bool)
    values = np.asarray(values, dtype=np.float64)
    return ratio_statistic(np.where(keep, values, 0.0), keep.astype(np.float64), request)


@dataclass(frozen=True)
class Bootstrapped:
    """A statistic on all requests (every weight 1) and on each resample."""

    value: float
    draws: np.ndarray


def bootstrap(
    statistics: Mapping[str, Statistic],
    n_requests: int,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Bootstrapped]:
    """Every statistic on all requests and on the same ``n_resamples`` resamples."""
    ones = np.ones((1, n_requests))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    for weights in resample_weights(n_requests, n_resamples, seed):
        for name, statistic in statistics.items():
            draws[name].append(statistic(weights))
    return {
        name: Bootstrapped(float(statistic(ones)[0]), np.concatenate(draws[name]))
        for name, statistic in statistics.items()
    }


def interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the draws (resamples where a statistic is undefined, nan, left
    out); nan when fewer than half of the resamples define it."""
    finite = draws[~np.isnan(draws)]
    if finite.size * 2 < draws.size or finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return float(lo), float(hi)


def seed_interval(
    per_seed: Sequence[float], pooled_draws: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """A CI for B - A that counts the training seed as well as the test requests: ``(lo, hi,
    df)`` around the mean of each training seed's own difference ``per_seed``.

    The request bootstrap holds the trained models fixed; a retrained model lands elsewhere
    (the seeds' spread). With the seeds' differences d_s (n of them, evaluated on the same
    requests) and the bootstrap draws of their mean (``pooled_draws``, each resample's
    differences averaged over the seeds), the interval is d-bar +- t(df) sqrt(s^2/n + se^2):
    s^2 the sample variance of the d_s (the seeds as random effects), se the standard deviation
    of the draws (the requests, shared by every seed), df by Welch-Satterthwaite with the
    draws' degrees of freedom taken as infinite. A seed's own difference also carries the part
    of the request noise that the seeds do not share, so s^2 counts some of se^2 again: the
    interval errs wide. Simulated with three seeds (the request noise shared), it covers a
    zero difference about 92% of the time when the seeds spread four times more than the
    requests (the request CI 59%), 95% when they spread less (tests/metrics/test_paired.py).
    Symmetric, where the request CI is a percentile interval, so it is not always nested
    around that CI. Nan with fewer than two seeds, a seed's difference undefined or infinite,
    or fewer than two or half of the draws defined (as :func:`interval`)."""
    seeds = np.asarray(per_seed, dtype=float)
    finite = pooled_draws[~np.isnan(pooled_draws)]
    undefined = finite.size * 2 < pooled_draws.size or finite.size < 2
    if seeds.size < 2 or undefined or not np.isfinite(seeds).all():
        return float("nan"), float("nan"), float("nan")
    between, within = seeds.var(ddof=1) / seeds.size, finite.var(ddof=1)
    total = between + within
    df = total**2 * (seeds.size - 1) / between**2 if between > 0 else np.inf
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * np.sqrt(total)
    centre = float(seeds.mean())
    return centre - half, centre + half, float(df)


def date_interval(
    cells: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """A CI for B - A that counts the dates of the test days as well as the training seeds:
    ``(centre, lo, hi, df)`` from ``cells`` ``(seeds, dates)``, each seed's difference on
    each date (every seed evaluated on the same dates).

    On a world that changes from day to day, a mechanism's effect moves from date to date by
    more than a day's request CI (docs/fidelity.md, "the control on a two-day validation
    window"), and every seed meets the same dates, so neither the request bootstrap nor the
    seed-aware interval (:func:`seed_interval`) counts them. The cells are read as a
    crossed two-way random-effects layout, d = mu + a_seed + b_date + e, with one cell per
    seed and date: from the mean squares of seeds, dates and the residual (MS_S, MS_D, MS_E;
    S seeds, D dates), the variance of the cells' mean is (MS_E + max(0, MS_S - MS_E) +
    max(0, MS_D - MS_E)) / (S D), a component estimated below 0 counting as 0, and df is
    Welch-Satterthwaite's for that sum. A cell's request noise is part of its residual and,
    shared by the seeds on one date, of that date's effect, so no bootstrap is added. The
    centre is the mean of the cells, each date weighted alike (a pooled difference weights
    dates by their requests). With one seed or one date it is the t interval over the other.
    It says nothing of other worlds. Nan with fewer than two cells in all, or a cell
    undefined or infinite."""
    cells = np.asarray(cells, dtype=float)
    nan = (float("nan"),) * 4
    if cells.ndim != 2 or cells.size < 2 or not np.isfinite(cells).all():
        return nan
    seeds, dates = cells.shape
    centre = float(cells.mean())
    if min(seeds, dates) == 1:
        flat = cells.ravel()
        terms = [(flat.var(ddof=1) / flat.size, flat.size - 1)]
    else:
        seed_means, date_means = cells.mean(1), cells.mean(0)
        ms_seed = dates * ((seed_means - centre) ** 2).sum() / (seeds - 1)
        ms_date = seeds * ((date_means - centre) ** 2).sum() / (dates - 1)
        residual = cells - seed_means[:, None] - date_means[None, :] + centre
        ms_residual = (residual**2).sum() / ((seeds - 1) * (dates - 1))
        # each mean square with its coefficient in the variance of the mean, times S D
        terms = [(ms, df) for ms, df in ((ms_seed, seeds - 1), (ms_date, dates - 1))
                 if ms > ms_residual]  # fmt: skip
        own = 1 - len(terms)  # MS_E's coefficient: 1, less one for each component kept
        terms = [(ms / cells.size, df) for ms, df in terms]
        terms.append((own * ms_residual / cells.size, (seeds - 1) * (dates - 1)))
    total = sum(v for v, _ in terms)
    spread = sum(v**2 / df for v, df in terms)
    df = total**2 / spread if spread > 0 else np.inf
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * np.sqrt(max(total, 0.0))
    return centre, centre - half, centre + half, float(df)


@dataclass(frozen=True)
class PairedDifference:
    """Model B against model A on the same requests: each one's metric and B - A per resample."""

    a: float
    b: float
    draws: np.ndarray

    @property
    def difference(self) -> float:
        return self.b - self.a

    def summary(self, confidence: float = CONFIDENCE) -> dict[str, float | bool | None]:
        """a, b, diff (B - A on all requests), mean (of the resampled differences), lo and hi
        (the percentile CI) and whether the CI spans 0 ("no difference"); None where a metric
        is undefined (nan)."""
        lo, hi = interval(self.draws, confidence)
        finite = self.draws[~np.isnan(self.draws)]
        return summary_of(
            self.a, self.b, float(finite.mean()) if finite.size else float("nan"), lo, hi
        )


def summary_of(
    a: float, b: float, mean: float, lo: float, hi: float
) -> dict[str, float | bool | None]:
    """The JSON form of a paired difference (nan as None; ``spans_zero`` None without a CI)."""

    def clean(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    return {
        "a": clean(a),
        "b": clean(b),
        "diff": clean(b - a),
        "mean": clean(mean),
        "lo": clean(lo),
        "hi": clean(hi),
        "spans_zero": None if np.isnan(lo) else bool(lo <= 0.0 <= hi),
    }


def paired_bootstrap(
    a: Mapping[str, Statistic],
    b: Mapping[str, Statistic],
    n_requests: int,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """B - A of every statistic the two models share, all on the same resamples."""
    names = [name for name in a if name in b]
    both = {f"a:{n}": a[n] for n in names} | {f"b:{n}": b[n] for n in names}
    result = bootstrap(both, n_requests, n_resamples, seed)
    return {
        n: PairedDifference(
            result[f"a:{n}"].value,
            result[f"b:{n}"].value,
            result[f"b:{n}"].draws - result[f"a:{n}"].draws,
        )
        for n in names
    }
