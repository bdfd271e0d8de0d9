"""Examination probability by position, estimated from a click log by intervention harvesting.

Under the position-based model a click on item ``d`` shown at position ``k`` for query ``q`` has
probability ``p_k * r(q, d)``: examination times attraction. A ranker that is not deterministic
(a noisy production ranker, several rankers over time, A/B tests) shows the same (query, item)
pair at different positions in different requests; those are interventions that cost nothing.
Agarwal, Zaitsev, Wang, Li, Najork and Joachims, *Estimating Position Bias without Intrusive
Interventions* (WSDM 2019), harvest them: for a pair of positions ``(k, k')``, the set
``S(k, k')`` of (query, item) pairs shown at both; the click rate of each pair at ``k`` (clicks
over impressions of that pair at that position), summed over ``S(k, k')``, has expectation
``p_k * R(k, k')``, and the sum at ``k'`` has ``p_k' * R(k, k')``, with the same relevance mass
``R(k, k')`` on both sides. Their *AllPairs* extremum estimator fits every ``p_k`` and one
relevance ``r(k, k') = r(k', k)`` per pair of positions by maximising

    sum over k != k' of  c(k, k') log(p_k r(k, k')) + (|S(k, k')| - c(k, k')) log(1 - p_k r(k, k'))

where ``c(k, k')`` is the summed click rate at ``k``. Only ratios ``p_k / p_1`` are identified,
which is all that inverse propensity weights need (:mod:`prectr.evaluation.offpolicy`).

The fit is repeated on bootstrap resamples of the log's requests, so that confidence intervals
of estimates that divide by these propensities can carry their noise (a ranking that moves the
logged 10th item to the top weighs its clicks by ``p_1 / p_10``, and a few percent of error in
``p_10`` moves the estimate as much as the click noise does: docs/offpolicy.md).

**Clicks that stop the user.** Under the dependent click model (DCM: after a click at ``j``
the user goes on with probability ``lambda`` times what they would without the click, Guo, Liu
and Wang, *Efficient Multiple-Click Models in Web Search*, WSDM 2009) examination depends on the
clicks above, and the plain harvested ``p_k`` are the logging ranker's average examination, not
a property of the position. Given ``lambda`` (``after_click``), a click at ``k`` below ``n``
clicks has probability ``p_k lambda^n a``, and its *adjusted click* ``c lambda^-n`` has
expectation ``p_k a`` whatever the user did above (:mod:`prectr.evaluation.offpolicy` derives
it), so AllPairs on adjusted clicks harvests the position part ``p_k`` of examination.
``lambda`` itself is an input: on the simulated worlds, moment conditions on what was shown
above a candidate did not recover it (docs/offpolicy.md); ``after_click = 1`` is the
position-based model, and ``lambda -> 0`` the cascade model, which this estimate cannot take
(a second click is then never seen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from prectr.evaluation.logged import LoggedRows, sum_above
from prectr.metrics.paired import resample_weights

RESAMPLES = 50  # refits on bootstrap resamples of the requests


@dataclass(frozen=True)
class Propensities:
    """Relative examination probability of positions 1..k (position 1 = 1) with no click above;
    the evidence: ``pairs[k, k']``, how many (query, item) pairs were shown at both positions;
    the fit on each bootstrap resample of the requests, ``resamples`` (n, k); and the click
    click model's assumed ``after_click``, the factor on going on after a click (1:
    position-based), and ``top_examination``, the absolute examination of position 1, which
    harvesting cannot see (only ratios are identified); it matters only where the dependent
    model's product meets a direct method's attraction (:mod:`prectr.evaluation.offpolicy`)."""

    examination: np.ndarray
    pairs: np.ndarray
    resamples: np.ndarray
    after_click: float = 1.0
    top_examination: float = 1.0

    @property
    def k(self) -> int:
        return int(self.examination.size)

    def to_dict(self) -> dict[str, list]:
        return {
            "examination": self.examination.tolist(),
            "after_click": self.after_click,
            "top_examination": self.top_examination,
            "resampled_std": self.resamples.std(axis=0).tolist() if len(self.resamples) else None,
            "pairs": self.pairs.tolist(),
        }


def harvest_propensities(
    impressions: pa.Table,
    requests: pa.Table,
    k: int = 10,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
    after_click: float = 1.0,
    top_examination: float = 1.0,
) -> Propensities:
    """Fit examination by position 1..``k`` on a log's exposed impressions (request_id,
    item_id, position, click) and its requests (request_id, query) with AllPairs, and again on
    ``n_resamples`` bootstrap resamples of the requests; rows shown below ``k`` are left out.
    ``after_click`` in (0, 1] is the DCM's factor on going on after a click (1: the
    position-based model); clicks are adjusted by it first. ``top_examination`` in (0, 1] is
    recorded for the estimators (:class:`Propensities`). Raises when some position shares
    no (query, item) pair with the others (its propensity is not identified by the log)."""
    check_click_model(after_click, top_examination)
    rows = LoggedRows.from_tables(impressions, requests)
    shown = rows.exposed & (rows.position <= k)
    pair, position = rows.pair[shown], rows.position[shown]
    click = adjusted_clicks(rows.request[shown], position, rows.click[shown], after_click)
    fitted = all_pairs(pair, position, click, k)
    refits = [
        all_pairs(pair, position, click, k, weights[rows.request[shown]]).examination
        for block in resample_weights(len(rows.request_ids), n_resamples, seed)
        for weights in block
    ]
    resamples = np.array(refits).reshape(-1, k)
    return Propensities(fitted.examination, fitted.pairs, resamples, after_click, top_examination)


def check_click_model(after_click: float, top_examination: float) -> None:
    """Raise unless both of the assumed click model's probabilities lie in (0, 1]."""
    for name, value in (("after_click", after_click), ("top_examination", top_examination)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} = {value}: expected a value in (0, 1]")


def adjusted_clicks(
    request: np.ndarray, position: np.ndarray, click: np.ndarray, after_click: float
) -> np.ndarray:
    """Each shown row's click times ``after_click ** -(clicks above it in its request)``: under
    the DCM its expectation is the examination with no click above times the attraction."""
    if after_click == 1.0:
        return click.astype(np.float64)
    return click * after_click ** -sum_above(request, position, click)


def all_pairs(
    pair: np.ndarray,
    position: np.ndarray,
    click: np.ndarray,
    k: int,
    weight: np.ndarray | None = None,
) -> Propensities:
    """AllPairs on exposed rows: ``pair`` codes the (query, item) pair, ``position`` is 1..k,
    ``click`` 0/1 (or an expected click rate), ``weight`` each row's count (default 1)."""
    if k < 2:
        raise ValueError(f"k = {k}: harvesting needs at least two positions")
    weight = np.ones(pair.size) if weight is None else np.asarray(weight, np.float64)
    kept = weight > 0
    pair, position, click, weight = pair[kept], position[kept], click[kept], weight[kept]
    if pair.size == 0:
        raise ValueError("no exposed impressions to harvest propensities from")
    cell_code, cell = np.unique(pair.astype(np.int64) * k + (position - 1), return_inverse=True)
    impressions = np.bincount(cell, weights=weight)
    rate = np.bincount(cell, weights=weight * click.astype(np.float64)) / impressions
    group, col = np.unique(cell_code // k, return_inverse=True)[1], cell_code % k
    shape = (int(group.max()) + 1, k)
    from scipy import sparse  # SciPy loads on use: `prectr --help` reads this module

    at = sparse.csr_matrix((np.ones(col.size), (group, col)), shape=shape)
    rates = sparse.csr_matrix((rate, (group, col)), shape=shape)
    pairs = (at.T @ at).toarray()
    clicks = (rates.T @ at).toarray()  # clicks[k, k']: summed click rate at k over S(k, k')
    np.fill_diagonal(pairs, 0.0)
    np.fill_diagonal(clicks, 0.0)
    _check_connected(pairs)
    return Propensities(_maximise(clicks, pairs - clicks), pairs.astype(np.int64), np.empty((0, k)))


def _check_connected(pairs: np.ndarray) -> None:
    n, reached, frontier = pairs.shape[0], {0}, [0]
    while frontier:
        linked = np.flatnonzero(pairs[frontier].sum(axis=0) > 0)
        frontier = [int(j) for j in linked if j not in reached]
        reached.update(frontier)
    if len(reached) < n:
        missing = ", ".join(str(j + 1) for j in range(n) if j not in reached)
        raise ValueError(
            f"positions {missing} share no (query, item) pair with position 1: their "
            "examination is not identified by this log (no interventions harvested)"
        )


def _maximise(clicks: np.ndarray, misses: np.ndarray) -> np.ndarray:
    """The AllPairs maximum: logits of p (k) and of the symmetric r (upper triangle)."""
    k = clicks.shape[0]
    upper = np.triu_indices(k, 1)
    used = (clicks + misses) > 0

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-x[:k]))
        r = np.zeros((k, k))
        r[upper] = 1.0 / (1.0 + np.exp(-x[k:]))
        return p, r + r.T

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        p, r = unpack(x)
        z = np.clip(p[:, None] * r, 1e-12, 1.0 - 1e-12)
        value = -np.where(used, clicks * np.log(z) + misses * np.log1p(-z), 0.0).sum()
        slope = np.where(used, clicks - misses * z / (1.0 - z), 0.0)  # d value / d log z
        grad_p = slope.sum(axis=1) * (1.0 - p)
        grad_r = (slope + slope.T)[upper] * (1.0 - r[upper])
        return float(value), -np.concatenate([grad_p, grad_r])

    start = np.zeros(k + upper[0].size)
    from scipy.optimize import minimize

    result = minimize(loss, start, jac=True, method="L-BFGS-B")
    if not result.success:
        raise RuntimeError(f"AllPairs propensity fit did not converge: {result.message}")
    p = unpack(result.x)[0]
    return p / p[0]
