"""Exact, vectorised click and ranking metrics, paired bootstrap differences
(:mod:`prectr.metrics.paired`), and the figures of predicted relevance grades
(:mod:`prectr.metrics.grades`)."""

from prectr.metrics.click import (
    auc,
    calibration,
    expected_calibration_error,
    gauc,
    group_auc,
    logloss,
    relaimpr,
    reliability_bins,
)
from prectr.metrics.ranking import (
    irrelevant_share_at_k,
    irrelevant_share_at_k_per_group,
    mean_grade_at_k,
    mean_grade_at_k_per_group,
    ndcg_at_k,
    ndcg_at_k_per_group,
    recall_at_k,
    recall_at_k_per_group,
)

#: Metrics where the smallest value is best; every other metric is best when largest, except
#: ``calibration`` (mean predicted / observed CTR), which is best closest to 1.
LOWER_IS_BETTER = frozenset({"logloss", "ece", "irrelevant@10"})

__all__ = [
    "LOWER_IS_BETTER",
    "auc",
    "calibration",
    "expected_calibration_error",
    "gauc",
    "group_auc",
    "irrelevant_share_at_k",
    "irrelevant_share_at_k_per_group",
    "logloss",
    "mean_grade_at_k",
    "mean_grade_at_k_per_group",
    "ndcg_at_k",
    "ndcg_at_k_per_group",
    "recall_at_k",
    "recall_at_k_per_group",
    "relaimpr",
    "reliability_bins",
]
