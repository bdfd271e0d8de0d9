"""Evaluation of rankings on a world's test requests: exact metrics, slices, the broad set, the
online proxy, and paired bootstrap comparisons of two runs.

* :mod:`~prectr.evaluation.scoring`: the exact metrics of one ranking (``prectr score``).
* :mod:`~prectr.evaluation.statistics`: every metric as a statistic of request weights, so one
  definition gives the exact value and its bootstrap.
* :mod:`~prectr.evaluation.slices`: query frequency, user activity, exact-item scarcity, new
  items, unexposed candidates.
* :mod:`~prectr.evaluation.broad`: the broad retrieved set's sample, scored by a run.
* :mod:`~prectr.evaluation.context`: the run split's requests, rows, days and slices.
* :mod:`~prectr.evaluation.run`: ``prectr evaluate``; :mod:`~prectr.evaluation.compare`:
  ``prectr compare``.

Their names here load on first use (:mod:`prectr.lazy`).
"""

from typing import TYPE_CHECKING

from prectr.lazy import lazy_exports

if TYPE_CHECKING:
    from prectr.evaluation.compare import compare_runs
    from prectr.evaluation.run import evaluate_run
    from prectr.evaluation.scoring import (
        calibration_bins,
        click_metrics,
        evaluate_scores,
        evaluation_pool,
        relevance_metrics,
        train_impressions,
    )

__all__ = [
    "calibration_bins",
    "click_metrics",
    "compare_runs",
    "evaluate_run",
    "evaluate_scores",
    "evaluation_pool",
    "relevance_metrics",
    "train_impressions",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    dict.fromkeys(__all__, "scoring") | {"compare_runs": "compare", "evaluate_run": "run"},
)
