"""Where an evaluation takes its truth from: the search log alone, or the simulated world
behind it.

Every metric compares a model's scores with some truth about the evaluated candidates.

* **A log in the schema** (:class:`LogTruth`) carries clicks and positions of the exposed
  candidates and, where someone judged a pair, a graded relevance. Only human judgments count
  as truth (``relevance_source`` = ``human``): a teacher's or simulator's grade is a model's
  opinion, not a judgment. So on a plain log the click metrics, NDCG on clicks, calibration and
  the slices are measured; the relevance metrics are measured on the graded candidates of each
  request (ranked among themselves: a condensed list, Sakai 2007); the online proxy and the
  broad set are not, and the evaluation says why.
* **A simulated world** (:class:`WorldTruth`) knows every candidate's true grade, its logging
  ranker's score, the click model (so it replays any new ranking: the online proxy) and a
  sample of the broad retrieved set.

`prectr evaluate`, `prectr compare` and the report read their truth through this one interface
(:func:`open_truth`), whichever the log is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.schema import SearchLog
from prectr.evaluation.broad import broad_sample

if TYPE_CHECKING:
    from prectr.data.simulate import World

#: The columns of :meth:`Truth.pool`: ``grade`` is null where the candidate's grade is unknown;
#: ``logging_score`` ranks the candidates as the logging ranker did.
POOL = ("request_id", "item_id", "user_id", "click", "grade", "logging_score")
#: Columns of the log's tables the evaluation reads (split, slices and, on a plain log, truth).
LOG_COLUMNS = {
    "items": ["item_id"],
    "requests": ["request_id", "user_id", "query", "timestamp"],
    "impressions": ["request_id", "item_id", "position", "click", "relevance", "relevance_source"],
}
WORLD_ONLY = "needs a simulated world"


class Truth(ABC):
    """What is known about the evaluated candidates besides the model's scores."""

    #: ``log`` or ``world``: where the truth comes from.
    source: str

    def __init__(self, log: SearchLog, root: Path):
        self.log = log
        self.root = root

    @abstractmethod
    def pool(self, request_ids: pa.Array) -> pa.Table:
        """Every candidate of the requests ``request_ids``: the columns :data:`POOL`, ``click``
        null where the candidate was not shown, sorted by (request_id, item_id)."""

    @abstractmethod
    def replay(self, scored: pa.Table, candidates: str = "pool") -> np.ndarray | None:
        """Expected clicks of each scored request (ascending request id) when its
        ``candidates`` (``pool`` or ``broad``) are ranked by ``scored`` (request_id, item_id,
        score); None when the truth cannot replay a ranking."""

    @abstractmethod
    def broad(self, request_ids: pa.Array) -> tuple[pa.Table | None, str | None]:
        """The broad-set sample of ``request_ids`` (request_id, item_id, true_relevance), or
        None and the reason there is none."""

    def unmeasured(self) -> dict[str, str]:
        """What this truth cannot measure, and why."""
        return {}

    @abstractmethod
    def grades(self) -> str:
        """What the relevance metrics' grades are, in words."""

    def _pool_of(self, candidates: pa.Table, request_ids: pa.Array) -> pa.Table:
        """``candidates`` of ``request_ids`` with each request's user, as :data:`POOL`, sorted
        by (request_id, item_id)."""
        requests = self.log.requests.select(["request_id", "user_id"])
        users = requests.filter(pc.is_in(requests["request_id"], request_ids))
        pool = candidates.join(users, "request_id").select(list(POOL))
        return pool.sort_by([("request_id", "ascending"), ("item_id", "ascending")])


class LogTruth(Truth):
    """The truth a search log in the schema carries: clicks, positions, human grades."""

    source = "log"

    def pool(self, request_ids: pa.Array) -> pa.Table:
        impressions = self.log.impressions
        for column in ("position", "click", "relevance", "relevance_source"):
            if column not in impressions.column_names:
                raise ValueError(f"{self.root}: impressions has no {column} column")
        impressions = impressions.filter(pc.is_in(impressions["request_id"], request_ids))
        human = pc.fill_null(pc.equal(impressions["relevance_source"], "human"), False)
        grade = pc.if_else(human, impressions["relevance"], pa.scalar(None, pa.int8()))
        position = impressions["position"].to_numpy(zero_copy_only=False).astype(np.float64)
        unexposed = np.isnan(position)
        # the logged order: shown candidates by position, the unexposed after them, tied
        below = (np.nanmax(position) if (~unexposed).any() else 0.0) + 1.0
        logging_score = -np.where(unexposed, below, position)
        candidates = pa.table(
            {
                "request_id": impressions["request_id"],
                "item_id": impressions["item_id"],
                "click": impressions["click"],
                "grade": grade.cast(pa.int8()),
                "logging_score": logging_score,
            }
        )
        return self._pool_of(candidates, request_ids)

    def replay(self, scored: pa.Table, candidates: str = "pool") -> np.ndarray | None:
        return None

    def broad(self, request_ids: pa.Array) -> tuple[pa.Table | None, str | None]:
        return None, f"{WORLD_ONLY}: a log holds only the logged pool, not what retrieval returned"

    def unmeasured(self) -> dict[str, str]:
        return {
            "online": f"{WORLD_ONLY}: a log cannot show what users would have clicked under a "
            "new ranking (the world replays it with its click model); the off-policy estimate "
            "from the log's own clicks (offpolicy) stands in",
        }

    def grades(self) -> str:
        return (
            "human grades (relevance_source = human), on the graded candidates of each request, "
            "ranked among themselves"
        )


class WorldTruth(Truth):
    """A simulated world's truth: true grades, the logging ranker, replay and the broad set."""

    source = "world"

    def __init__(self, log: SearchLog, world: World):
        super().__init__(log, world.root)
        self.world = world

    def pool(self, request_ids: pa.Array) -> pa.Table:
        columns = ["request_id", "item_id", "click", "true_relevance", "logging_score"]
        candidates = self.world.impressions(request_ids, columns).rename_columns(
            ["request_id", "item_id", "click", "grade", "logging_score"]
        )
        return self._pool_of(candidates, request_ids)

    def replay(self, scored: pa.Table, candidates: str = "pool") -> np.ndarray:
        per_request = self.world.replay(scored, candidates=candidates).per_request
        per_request = per_request.sort_by("request_id")
        if not np.array_equal(
            per_request["request_id"].to_numpy(), np.unique(scored["request_id"].to_numpy())
        ):
            raise ValueError(f"the {candidates} replay did not return every scored request once")
        return per_request["expected_clicks"].to_numpy()

    def broad(self, request_ids: pa.Array) -> tuple[pa.Table | None, str | None]:
        return broad_sample(self.world, request_ids)

    def grades(self) -> str:
        return "the world's true grade of every candidate"


def open_truth(log: SearchLog, root: str | Path) -> Truth:
    """The truth of the log read from ``root``: the world's when ``root`` is a simulated world
    (it holds ``world.json``), otherwise the log's own."""
    root = Path(root)
    if (root / "world.json").is_file():
        from prectr.data.simulate import World  # only a world's truth needs the simulator

        return WorldTruth(log, World(root))
    return LogTruth(log, root)
