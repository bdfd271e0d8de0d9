"""What the evaluation of a run's test split needs besides the scores: the requests and their
candidates, the slices, the test days, the broad-set sample, and the world to replay in.

`prectr evaluate` (one run) and `prectr compare` (two runs, paired) both build one
:class:`EvaluationContext` and ask it for each model's statistics, so both score exactly the
same requests, rows and slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.dataset import time_split
from prectr.data.schema import SearchLog
from prectr.data.simulate import World
from prectr.evaluation.broad import BroadRows, broad_sample
from prectr.evaluation.scoring import evaluation_pool
from prectr.evaluation.slices import Slices, evaluation_slices, slice_statistics
from prectr.evaluation.statistics import EvaluationRows, model_statistics
from prectr.metrics.paired import Statistic

ALL = "all"
SPLITS = ("test", "valid")


@dataclass
class EvaluationContext:
    """The test split of one world and one run configuration (valid_days, test_days)."""

    world: World
    test_rows: np.ndarray  # rows of the log's requests table in the evaluated split
    rows: EvaluationRows
    logging_score: np.ndarray
    slices: Slices
    days: dict[str, np.ndarray]  # ISO date -> mask over evaluated requests
    broad: BroadRows | None
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, world: World, log: SearchLog, valid_days: int, test_days: int, split: str = "test"
    ) -> EvaluationContext:
        """The context of the run split (valid_days, test_days) of ``log``, the world's log:
        its test days, or with ``split="valid"`` its validation days (where choices are made,
        so that the test days are never looked at for one)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        days = time_split(log.requests, valid_days, test_days)
        requests = log.requests
        test_ids = requests["request_id"].take(pa.array(days[split])).combine_chunks()
        pool = evaluation_pool(world, test_ids)
        pool = pool.sort_by([("request_id", "ascending"), ("item_id", "ascending")])
        rows = EvaluationRows.from_pool(pool)
        train_ids = requests["request_id"].take(pa.array(days["train"]))
        train_items = pc.unique(
            log.impressions.filter(pc.is_in(log.impressions["request_id"], train_ids))["item_id"]
        ).to_numpy()
        slices = evaluation_slices(requests, days["train"], train_items, rows)
        sample, reason = broad_sample(world, test_ids)
        skipped = dict(slices.skipped)
        if reason:
            skipped["broad"] = reason
        return cls(
            world=world,
            test_rows=days[split],
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
        keys = pa.table(
            {
                "request_id": self.rows.request_ids[self.rows.request],
                "item_id": self.rows.item_id,
                "row": np.arange(self.rows.request.size),
            }
        )
        joined = keys.join(scores.select(["request_id", "item_id", column]),
                           ["request_id", "item_id"], join_type="left outer")  # fmt: skip
        missing = joined[column].null_count
        if missing:
            raise ValueError(
                f"{source} misses {missing} of the {keys.num_rows} candidates of the evaluated "
                "requests (evaluate the run on this world and split)"
            )
        return joined.sort_by("row")[column].to_numpy().astype(np.float64)

    def expected_clicks(self, score: np.ndarray) -> np.ndarray:
        """Expected clicks of each evaluated request when the world replays ``score``."""
        rows = self.rows
        scored = pa.table(
            {"request_id": rows.request_ids[rows.request], "item_id": rows.item_id, "score": score}
        )
        per_request = self.world.replay(scored).per_request.sort_by("request_id")
        if not np.array_equal(per_request["request_id"].to_numpy(), rows.request_ids):
            raise ValueError("the replay did not return every evaluated request once")
        return per_request["expected_clicks"].to_numpy()

    def statistics(
        self,
        score: np.ndarray,
        clicks: np.ndarray,
        broad_score: np.ndarray | None = None,
        per_day: bool = True,
        probability: np.ndarray | None = None,
    ) -> dict[str, dict[str, Statistic]]:
        """Every metric of one model's ``score`` (per row; ``clicks``: its
        :meth:`expected_clicks`) as statistics, by section: ``all``, ``day:DATE`` (with
        ``per_day``), each slice, and ``broad`` (given scores of the broad sample);
        ``probability`` (per row, the click probability where shown) adds logloss and
        calibration."""
        out = {ALL: model_statistics(self.rows, score, None, clicks, probability)}
        if per_day:
            for day, mask in self.days.items():
                where = mask[self.rows.request]
                out[f"day:{day}"] = model_statistics(self.rows, score, where, clicks, probability)
        out |= slice_statistics(self.slices, self.rows, score, clicks, probability)
        if self.broad is not None and broad_score is not None:
            out["broad"] = self.broad.statistics(self.world, broad_score)
        return out


def _days(requests: pa.Table, request_ids: np.ndarray) -> dict[str, np.ndarray]:
    """For each calendar day (UTC) of the evaluated requests, which of them fall on it."""
    found = pc.index_in(pa.array(request_ids), requests["request_id"])
    timestamp = requests["timestamp"].take(found)
    date = pc.cast(pc.cast(timestamp, pa.timestamp("ms")), pa.date32())
    day = date.cast(pa.int32()).to_numpy(zero_copy_only=False)
    return {str(np.datetime64(int(d), "D")): day == d for d in np.unique(day)}
