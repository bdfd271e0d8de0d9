"""Every evaluation metric as a bootstrappable statistic of request weights.

One definition serves both uses: with every weight 1 a statistic is the exact metric that
:mod:`prectr.evaluation.scoring` computes (`prectr evaluate`), and on resample weights it is
that metric of a bootstrap resample of requests (`prectr compare`, the online proxy's CI).
See :mod:`prectr.metrics.paired` for the resampling.

The metrics: click metrics on exposed rows (AUC, user- and request-GAUC of the ranking score,
NDCG@10 on clicks of the shown candidates reordered by the score, and given the click
probability of each impression at its logged position, logloss and calibration: predicted and
observed CTR then refer to the same impressions), relevance metrics on the pool's known grades
(a world's true grades, a log's human grades: :mod:`prectr.evaluation.truth`): NDCG@10,
mean grade and irrelevant share in the top 10; expected clicks per request from the world's
replay, and on the broad set irrelevant@10, NDCG@10, recall@100 of exact items and replayed
expected clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from prectr.metrics import (
    group_auc,
    irrelevant_share_at_k_per_group,
    mean_grade_at_k_per_group,
    ndcg_at_k_per_group,
    recall_at_k_per_group,
)
from prectr.metrics.paired import (
    Statistic,
    auc_statistic,
    gauc_statistic,
    mean_statistic,
    ratio_statistic,
)

TOP_K = 10
RECALL_K = 100
EXACT_GRADE = 3
LOGLOSS_EPS = 1e-7


@dataclass(frozen=True)
class EvaluationRows:
    """The candidates of the evaluated requests, sorted by (request_id, item_id).

    ``request`` indexes ``request_ids`` (the evaluated requests, ascending): it is the index of
    a request's weight in a resample. ``grade`` is each candidate's known grade, -1 where it is
    unknown (a log's ungraded candidates), None where no candidate's grade is known: relevance
    metrics are then left out.
    """

    request_ids: np.ndarray
    request: np.ndarray
    item_id: np.ndarray
    user: np.ndarray
    click: np.ndarray
    exposed: np.ndarray
    grade: np.ndarray | None

    @classmethod
    def from_pool(cls, pool: pa.Table) -> EvaluationRows:
        """From a pool table with request_id, item_id, user_id, click (null when unexposed)
        and optionally grade (null when unknown)."""
        pool = pool.sort_by([("request_id", "ascending"), ("item_id", "ascending")])
        request_ids, request = np.unique(pool["request_id"].to_numpy(), return_inverse=True)
        click = pool["click"]
        grade = None
        if "grade" in pool.column_names and pool["grade"].null_count < pool.num_rows:
            grade = pool["grade"].fill_null(-1).to_numpy().astype(np.int64)
        return cls(
            request_ids=request_ids,
            request=request.ravel(),
            item_id=pool["item_id"].to_numpy(),
            user=pool["user_id"].to_numpy(),
            click=click.fill_null(0).to_numpy().astype(np.int64),
            exposed=click.is_valid().to_numpy(zero_copy_only=False),
            grade=grade,
        )

    @property
    def graded(self) -> np.ndarray:
        """Whether each candidate's grade is known."""
        if self.grade is None:
            return np.zeros(self.request.size, bool)
        return self.grade >= 0

    @property
    def n_requests(self) -> int:
        return int(self.request_ids.size)

    def requests_of(self, rows: np.ndarray) -> np.ndarray:
        """Whether each evaluated request has a row in the mask ``rows``."""
        return np.bincount(self.request[rows], minlength=self.n_requests) > 0


def click_statistics(
    rows: EvaluationRows, score: np.ndarray, where: np.ndarray, probability: np.ndarray | None
) -> dict[str, Statistic]:
    """AUC, user- and request-GAUC of ``score``, NDCG@10 of its order of the shown candidates
    with clicks as gains (requests with a click), and given ``probability`` (per row, the click
    probability where the row was shown) its logloss and calibration, on the exposed rows in
    the mask ``where``; none when those rows hold no click or no non-click."""
    keep = where & rows.exposed
    click, s, request = rows.click[keep], score[keep], rows.request[keep]
    if click.size == 0 or click.min() == click.max():
        return {}
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    keys, aucs, n, _ = group_auc(click, s, request)
    eligible = ~np.isnan(aucs)
    click_ndcg, has_click = ndcg_at_k_per_group(click, s, request, TOP_K)
    out = {
        "auc": auc_statistic(click, s, request),
        "gauc_user": gauc_statistic(click, s, rows.user[keep], request),
        "gauc_request": ratio_statistic(
            np.where(eligible, aucs * n, 0.0), np.where(eligible, n, 0.0), keys
        ),
        "click_ndcg@10": mean_statistic(click_ndcg, keys, has_click),
    }
    if probability is not None:
        shown = probability[keep]
        p = np.clip(shown, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
        loss = -(click * np.log(p) + (1 - click) * np.log1p(-p))
        out["logloss"] = mean_statistic(loss, request)
        out["calibration"] = ratio_statistic(shown, click.astype(np.float64), request)
    return out


def relevance_statistics(
    rows: EvaluationRows, score: np.ndarray, where: np.ndarray
) -> dict[str, Statistic]:
    """NDCG@10 (requests with a relevant candidate), mean grade and irrelevant share in the top
    10 of the graded rows in the mask ``where``, per request (its graded candidates ranked among
    themselves), averaged over requests."""
    where = where & rows.graded
    if not where.any():
        return {}
    grade, s, request = rows.grade[where], score[where], rows.request[where]
    keys = np.unique(request)
    ndcg, has_relevant = ndcg_at_k_per_group(grade, s, request, TOP_K)
    return {
        "ndcg@10": mean_statistic(ndcg, keys, has_relevant),
        "mean_grade@10": mean_statistic(mean_grade_at_k_per_group(grade, s, request, TOP_K), keys),
        "irrelevant@10": mean_statistic(
            irrelevant_share_at_k_per_group(grade, s, request, TOP_K), keys
        ),
    }


def model_statistics(
    rows: EvaluationRows,
    score: np.ndarray,
    where: np.ndarray | None = None,
    expected_clicks: np.ndarray | None = None,
    probability: np.ndarray | None = None,
) -> dict[str, Statistic]:
    """Every metric of one model's ``score`` (per row) on the rows in the mask ``where``
    (default all); ``expected_clicks`` per evaluated request (the replay) adds its mean over
    the requests that have a row in the mask; ``probability`` (per row, the click probability
    where it was shown) adds logloss and calibration."""
    where = np.ones(rows.request.size, bool) if where is None else where
    out = {
        **click_statistics(rows, score, where, probability),
        **relevance_statistics(rows, score, where),
    }
    if expected_clicks is not None and where.any():
        requests = np.flatnonzero(rows.requests_of(where))
        out["expected_clicks"] = mean_statistic(expected_clicks[requests], requests)
    return out


def broad_statistics(
    request: np.ndarray,
    grade: np.ndarray,
    score: np.ndarray,
    expected_clicks: np.ndarray | None = None,
) -> dict[str, Statistic]:
    """Metrics of a model's ranking of the broad-set sample: irrelevant@10, NDCG@10,
    recall@100 of exact items (requests holding one) and, given the replay's expected clicks
    per sampled request (ascending request index), their mean. ``request``: each row's index
    among the evaluated requests."""
    keys = np.unique(request)
    ndcg, has_relevant = ndcg_at_k_per_group(grade, score, request, TOP_K)
    recall, has_exact = recall_at_k_per_group(grade, score, request, RECALL_K, EXACT_GRADE)
    out = {
        "irrelevant@10": mean_statistic(
            irrelevant_share_at_k_per_group(grade, score, request, TOP_K), keys
        ),
        "ndcg@10": mean_statistic(ndcg, keys, has_relevant),
        "recall@100": mean_statistic(recall, keys, has_exact),
    }
    if expected_clicks is not None:
        out["expected_clicks"] = mean_statistic(expected_clicks, keys)
    return out


def values(statistics: dict[str, Statistic], n_requests: int) -> dict[str, float | None]:
    """Each statistic on all requests (every weight 1): the exact metric; None where it is
    undefined (nan)."""
    ones = np.ones((1, n_requests))
    out = {}
    for name, statistic in statistics.items():
        value = float(statistic(ones)[0])
        out[name] = None if np.isnan(value) else value
    return out
