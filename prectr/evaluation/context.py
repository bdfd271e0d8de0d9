"""What the evaluation of a run's test split needs besides the scores: the requests and their
candidates, the slices, the test days, and the truth (:mod:`prectr.evaluation.truth`): a
log's clicks and human grades, or a world's true grades, replay and broad-set sample.

`prectr evaluate` (one run) and `prectr compare` (two runs, paired) both build one
:class:`EvaluationContext` and ask it for each model's statistics, so both score exactly the
same requests, rows and slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.shards import time_split
from prectr.evaluation.broad import BroadRows
from prectr.evaluation.logged import scores_in_row_order
from prectr.evaluation.slices import Slices, evaluation_slices, slice_statistics
from prectr.evaluation.statistics import EvaluationRows, model_statistics
from prectr.evaluation.truth import Truth
from prectr.metrics.paired import Statistic

ALL = "all"
SPLITS = ("test", "valid")


@dataclass
class EvaluationContext:
    """The test split of one log and one run configuration (valid_days, test_days)."""

    truth: Truth
    test_rows: np.ndarray  # rows of the log's requests table in the evaluated split
    train_rows: np.ndarray  # and on the training days
    rows: EvaluationRows
    logging_score: np.ndarray
    slices: Slices
    days: dict[str, np.ndarray]  # ISO date -> mask over evaluated requests
    broad: BroadRows | None
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        truth: Truth,
        valid_days: int,
        test_days: int,
        split: str = "test",
        on_days: Sequence[str] = (),
    ) -> EvaluationContext:
        """The context of the run split (valid_days, test_days) of the truth's log: its test
        days, or with ``split="valid"`` its validation days (where choices are made,
        so that the test days are never looked at for one); with ``on_days`` (ISO dates),
        only those days of the split."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        log = truth.log
        days = time_split(log.requests, valid_days, test_days)
        requests = log.requests
        if on_days:
            days[split] = _on_days(requests, days[split], on_days, split)
        test_ids = requests["request_id"].take(pa.array(days[split])).combine_chunks()
        pool = truth.pool(test_ids)
        rows = EvaluationRows.from_pool(pool)
        train_ids = requests["request_id"].take(pa.array(days["train"]))
        train_items = pc.unique(
            log.impressions.filter(pc.is_in(log.impressions["request_id"], train_ids))["item_id"]
        ).to_numpy()
        slices = evaluation_slices(requests, days["train"], train_items, rows)
        sample, reason = truth.broad(test_ids)
        skipped = truth.unmeasured() | slices.skipped
        if reason:
            skipped["broad"] = reason
        return cls(
            truth=truth,
            test_rows=days[split],
            train_rows=days["train"],
            rows=rows,
            logging_score=pool["logging_score"].to_numpy(),
            slices=slices,
            days=_days(requests, rows.request_ids),
            broad=None if sample is None else BroadRows.from_sample(sample, rows.request_ids),
            skipped=skipped,
        )

    def aligned(self, scores: pa.Table, source: str, column: str = "score") -> np.ndarray:
        """Scores (request_id, item_id and ``column``) of every evaluated candidate, in row
        order; ``source`` names the scores in the error when some candidate has none."""
        rows = self.rows
        what = "candidates of the evaluated requests"
        return scores_in_row_order(rows.request_ids[rows.request], rows.item_id, scores, source,
                                   column, what)  # fmt: skip

    def expected_clicks(self, score: np.ndarray) -> np.ndarray | None:
        """Expected clicks of each evaluated request when the world replays ``score``; None
        when the truth cannot replay (a plain log)."""
        rows = self.rows
        scored = pa.table(
            {"request_id": rows.request_ids[rows.request], "item_id": rows.item_id, "score": score}
        )
        return self.truth.replay(scored)

    def statistics(
        self,
        score: np.ndarray,
        clicks: np.ndarray | None,
        broad_score: np.ndarray | None = None,
        per_day: bool = True,
        probability: np.ndarray | None = None,
    ) -> dict[str, dict[str, Statistic]]:
        """Every metric of one model's ``score`` (per row; ``clicks``: its
        :meth:`expected_clicks`) as statistics, by section: ``all``, ``day:DATE`` (with
        ``per_day``), each slice, and ``broad`` (given scores of the broad sample);
        ``probability`` (per row, the click probability where shown) adds logloss and
        calibration; ``clicks`` None leaves expected clicks out."""
        out = {ALL: model_statistics(self.rows, score, None, clicks, probability)}
        if per_day:
            for day, mask in self.days.items():
                where = mask[self.rows.request]
                out[f"day:{day}"] = model_statistics(self.rows, score, where, clicks, probability)
        out |= slice_statistics(self.slices, self.rows, score, clicks, probability)
        if self.broad is not None and broad_score is not None:
            replayed = self.truth.replay(self.broad.scored(broad_score), candidates="broad")
            out["broad"] = self.broad.statistics(broad_score, replayed)
        return out


def _on_days(
    requests: pa.Table, rows: np.ndarray, on_days: Sequence[str], split: str
) -> np.ndarray:
    """The ``rows`` (of the requests table, the ``split``'s) that fall on one of ``on_days``."""
    by_day = _days(requests, requests["request_id"].take(pa.array(rows)).to_numpy())
    unknown = [day for day in on_days if day not in by_day]
    if unknown:
        raise ValueError(f"day(s) {', '.join(unknown)} are not in the {split} split, whose days "
                         f"are {', '.join(by_day)}")  # fmt: skip
    return rows[np.logical_or.reduce([by_day[day] for day in on_days])]


def _days(requests: pa.Table, request_ids: np.ndarray) -> dict[str, np.ndarray]:
    """For each calendar day (UTC) of the evaluated requests, which of them fall on it."""
    found = pc.index_in(pa.array(request_ids), requests["request_id"])
    timestamp = requests["timestamp"].take(found)
    date = pc.cast(pc.cast(timestamp, pa.timestamp("ms")), pa.date32())
    day = date.cast(pa.int32()).to_numpy(zero_copy_only=False)
    return {str(np.datetime64(int(d), "D")): day == d for d in np.unique(day)}
