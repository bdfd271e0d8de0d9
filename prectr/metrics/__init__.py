"""Exact, vectorised click and ranking metrics."""

from prectr.metrics.click import auc, calibration, gauc, group_auc, logloss, relaimpr
from prectr.metrics.ranking import irrelevant_share_at_k, mean_grade_at_k, ndcg_at_k

__all__ = [
    "auc",
    "calibration",
    "gauc",
    "group_auc",
    "irrelevant_share_at_k",
    "logloss",
    "mean_grade_at_k",
    "ndcg_at_k",
    "relaimpr",
]
