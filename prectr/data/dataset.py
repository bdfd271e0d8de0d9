"""Streaming batches of encoded impressions, whole requests at a time.

Encoded impressions (row indices into the in-memory item and request features, impression-level
numerics, labels) are written to parquet sorted by request and read back in chunks of
``buffer_rows``, keeping the ``rows`` a loss reads (``exposed``, ``exposed_or_labelled``,
``labelled`` or ``all`` candidates); requests are shuffled within a chunk and never split
between batches, so request-level losses see every candidate of a request. The order is a
pure function of ``(seed, epoch)``, which is what makes an interrupted run resumable at the
same step. With ``world_size > 1`` each rank reads the requests whose row index falls to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from prectr.data.features import Categorical, EncodedLog, Numeric, Sequence, ranges
from prectr.io import atomic_file

ROW_GROUP = 65_536
ROW_SETS = ("exposed", "exposed_or_labelled", "labelled", "all")


def time_split(
    requests: pa.Table, valid_days: int = 1, test_days: int = 1
) -> dict[str, np.ndarray]:
    """Row indices of the requests of each split by calendar day (UTC): the last ``test_days``
    days are the test split, the ``valid_days`` before them validation, the rest training."""
    day = pc.cast(pc.cast(requests["timestamp"], pa.timestamp("ms")), pa.date32())
    day = day.cast(pa.int32()).to_numpy(zero_copy_only=False)
    days = np.unique(day)
    if days.size < valid_days + test_days + 1:
        raise ValueError(
            f"the log spans {days.size} days; a time split needs more than {valid_days + test_days}"
        )
    test_from, valid_from = days[-test_days], days[-test_days - valid_days]
    return {
        "train": np.flatnonzero(day < valid_from),
        "valid": np.flatnonzero((day >= valid_from) & (day < test_from)),
        "test": np.flatnonzero(day >= test_from),
    }


@dataclass
class Batch:
    """A batch of impressions: ids, numerics and sequences in the order of the feature specs."""

    categorical: torch.Tensor  # (B, n_categorical) int64
    numeric: torch.Tensor  # (B, n_numeric) float32
    sequences: dict[str, torch.Tensor]  # name -> (B, length) int64, 0 = padding
    click: torch.Tensor  # (B,) float32, 0 for unexposed rows
    exposed: torch.Tensor  # (B,) bool
    relevance: torch.Tensor  # (B,) int64, -1 = unknown
    request: torch.Tensor  # (B,) int64 request row, equal within a request
    item: torch.Tensor  # (B,) int64 item row
    position: torch.Tensor  # (B,) int64 shown rank, 0 = not exposed (for position-bias terms)

    def __len__(self) -> int:
        return self.click.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.categorical.to(device), self.numeric.to(device),
            {k: v.to(device) for k, v in self.sequences.items()}, self.click.to(device),
            self.exposed.to(device), self.relevance.to(device), self.request.to(device),
            self.item.to(device), self.position.to(device),
        )  # fmt: skip


class Collator:
    """Turns impression columns into a :class:`Batch` by gathering item and request features."""

    def __init__(self, encoded: EncodedLog):
        self.specs = encoded.specs
        levels = {"item": encoded.item, "request": encoded.request}
        self.tables = {
            spec.name: torch.from_numpy(np.ascontiguousarray(levels[spec.level][spec.name]))
            for spec in self.specs
            if spec.level in levels
        }

    def __call__(self, columns: dict[str, np.ndarray]) -> Batch:
        rows = {
            "item": torch.from_numpy(columns["item_row"]),
            "request": torch.from_numpy(columns["request_row"]),
        }

        def value(spec) -> torch.Tensor:
            if spec.level == "impression":
                return torch.from_numpy(columns[spec.name])
            return self.tables[spec.name][rows[spec.level]]

        cats = [value(s).long() for s in self.specs if isinstance(s, Categorical)]
        nums = [value(s).float() for s in self.specs if isinstance(s, Numeric)]
        click = columns["click"]
        relevance = columns["relevance"]
        return Batch(
            categorical=torch.stack(cats, 1),
            numeric=torch.stack(nums, 1),
            sequences={s.name: value(s).long() for s in self.specs if isinstance(s, Sequence)},
            click=torch.from_numpy(np.nan_to_num(click, nan=0.0).astype(np.float32)),
            exposed=torch.from_numpy(~np.isnan(click)),
            relevance=torch.from_numpy(np.nan_to_num(relevance, nan=-1).astype(np.int64)),
            request=rows["request"].long(),
            item=rows["item"].long(),
            position=torch.from_numpy(np.nan_to_num(columns["position"], nan=0).astype(np.int64)),
        )


def request_batch(
    specs: list, request: dict[str, np.ndarray], items: dict[str, np.ndarray],
    impressions: dict[str, np.ndarray],
) -> Batch:  # fmt: skip
    """The unlabelled batch of one request's candidates (serving): ``request`` holds its
    features as one row, ``items`` the candidates' item features in their order and
    ``impressions`` their pair features. Request-level ids and numerics are broadcast to every
    row; request-level sequences stay one row, which the model broadcasts."""
    n = len(items["item_id"])
    levels = {"request": {k: v[:1] for k, v in request.items()}, "item": items,
              "impression": impressions}  # fmt: skip

    def columns(kind: type, dtype: type) -> np.ndarray:
        chosen = [s for s in specs if isinstance(s, kind)]
        out = np.empty((n, len(chosen)), dtype)
        for j, spec in enumerate(chosen):
            out[:, j] = levels[spec.level][spec.name]
        return out

    sequences = {s.name: torch.from_numpy(levels[s.level][s.name].astype(np.int64))
                 for s in specs if isinstance(s, Sequence)}  # fmt: skip
    unlabelled = torch.zeros(n, dtype=torch.int64)
    return Batch(
        categorical=torch.from_numpy(columns(Categorical, np.int64)),
        numeric=torch.from_numpy(columns(Numeric, np.float32)),
        sequences=sequences,
        click=torch.zeros(n),
        exposed=torch.zeros(n, dtype=torch.bool),
        relevance=torch.full((n,), -1, dtype=torch.int64),
        request=unlabelled,
        item=torch.arange(n),
        position=unlabelled,
    )


def write_impressions(table: pa.Table, path: Path) -> Path:
    """Write encoded impressions sorted by request (atomically)."""
    table = table.sort_by([("request_row", "ascending")])
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
    return path


_COLUMNS_DROPPED = ("request_id", "item_id")


class BatchStream:
    """Batches of whole requests from an encoded-impressions parquet file."""

    def __init__(
        self,
        path: Path,
        collator: Collator,
        batch_size: int = 2048,
        shuffle: bool = True,
        seed: int = 0,
        rows: str = "exposed",
        buffer_rows: int = 262_144,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.path, self.collator = Path(path), collator
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if rows not in ROW_SETS:
            raise ValueError(f"rows {rows!r}: expected one of {', '.join(ROW_SETS)}")
        self.rows, self.buffer_rows = rows, buffer_rows
        self.rank, self.world_size = rank, world_size
        names = pq.ParquetFile(self.path).schema_arrow.names
        self.columns = [c for c in names if c not in _COLUMNS_DROPPED]

    def _chunks(self) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of about ``buffer_rows`` rows that never split a request."""
        carry: dict[str, np.ndarray] | None = None
        for record in pq.ParquetFile(self.path).iter_batches(
            self.buffer_rows, columns=self.columns
        ):
            chunk = {name: _numpy(record.column(name)) for name in self.columns}
            keep = np.ones(record.num_rows, dtype=bool)
            if self.rows != "all":
                exposed, labelled = ~np.isnan(chunk["click"]), ~np.isnan(chunk["relevance"])
                keep &= {"exposed": exposed, "labelled": labelled,
                         "exposed_or_labelled": exposed | labelled}[self.rows]  # fmt: skip
            if self.world_size > 1:
                keep &= chunk["request_row"] % self.world_size == self.rank
            chunk = {k: v[keep] for k, v in chunk.items()}
            if carry is not None:
                chunk = {k: np.concatenate([carry[k], v]) for k, v in chunk.items()}
            req = chunk["request_row"]
            if req.size == 0:
                carry = None
                continue
            last = req[-1]
            cut = int(np.searchsorted(req, last, side="left"))
            carry = {k: v[cut:] for k, v in chunk.items()}
            if cut:
                yield {k: v[:cut] for k, v in chunk.items()}
        if carry is not None and carry["request_row"].size:
            yield carry

    def epoch(self, epoch: int = 0, skip: int = 0) -> Iterator[Batch]:
        """The batches of one epoch, in an order fixed by (seed, epoch); the first ``skip``
        batches are passed over without being assembled (resuming mid-epoch). Rows left over
        at the end of a shuffle buffer join the next one, so only the last batch is short."""
        produced = 0
        pending: dict[str, np.ndarray] | None = None
        for index, chunk in enumerate(self._chunks()):
            chunk = self._shuffled(chunk, epoch, index)
            if pending is not None:
                chunk = {k: np.concatenate([pending[k], v]) for k, v in chunk.items()}
            req = chunk["request_row"]
            ends = np.r_[np.flatnonzero(req[1:] != req[:-1]) + 1, req.size]
            start = 0
            while (i := int(np.searchsorted(ends, start + self.batch_size))) < ends.size:
                cut = int(ends[i])  # the first request end at or after batch_size rows
                produced += 1
                if produced > skip:
                    yield self.collator({k: v[start:cut] for k, v in chunk.items()})
                start = cut
            pending = {k: v[start:] for k, v in chunk.items()}
        if pending is not None and pending["request_row"].size and produced + 1 > skip:
            yield self.collator(pending)

    def _shuffled(self, chunk: dict[str, np.ndarray], epoch: int, index: int) -> dict:
        """The chunk with its requests in a random order (rows of a request stay together)."""
        if not self.shuffle:
            return chunk
        req = chunk["request_row"]
        starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
        sizes = np.diff(np.r_[starts, req.size])
        order = np.random.default_rng([self.seed, epoch, index]).permutation(starts.size)
        rows = np.repeat(starts[order], sizes[order]) + ranges(sizes[order])
        return {k: v[rows] for k, v in chunk.items()}


def _numpy(column: pa.Array) -> np.ndarray:
    if pa.types.is_integer(column.type) and column.null_count:
        return column.cast(pa.float64()).fill_null(np.nan).to_numpy()
    return column.to_numpy(zero_copy_only=False)
