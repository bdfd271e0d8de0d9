"""Batches of encoded impressions: what a model reads.

A :class:`Batch` holds whole requests, each in consecutive rows; the :class:`Collator` builds one
from impression columns (row indices into the in-memory item and request features, impression
numerics, labels) by gathering the item and request features, and :func:`request_batch` builds
one from a single request's candidates (serving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prectr.capture import eager
from prectr.data.features import Categorical, EncodedLog, Numeric, Sequence

# the rows a loss averages over: every row of a batch, exposed, graded, clicked (and exposed)
LOSS_ROWS = ("all", "exposed", "labelled", "clicked", "paired")


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
    # in a distributed step: rows of each kind per process over the step (see ``rows_of``)
    step_rows: dict[str, float] | None = None

    def __len__(self) -> int:
        return self.click.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.categorical.to(device), self.numeric.to(device),
            {k: v.to(device) for k, v in self.sequences.items()}, self.click.to(device),
            self.exposed.to(device), self.relevance.to(device), self.request.to(device),
            self.item.to(device), self.position.to(device), self.step_rows,
        )  # fmt: skip

    def take(self, rows: torch.Tensor) -> Batch:
        """The batch's rows ``rows`` (indices, in that order) of a batch whose sequences have a
        row per candidate (not a served one); ``step_rows`` is kept, so a loss over the result
        still divides by the step's counts."""
        fields = (self.categorical, self.numeric, self.click, self.exposed, self.relevance,
                  self.request, self.item, self.position)  # fmt: skip
        categorical, numeric, *labels = (t.index_select(0, rows) for t in fields)
        sequences = {k: v.index_select(0, rows) for k, v in self.sequences.items()}
        return Batch(categorical, numeric, sequences, *labels, self.step_rows)

    def local_rows(self) -> dict[str, float]:
        """This batch's rows of each kind a loss averages over (see ``LOSS_ROWS``); ``paired``:
        the clicks whose request has an unexposed candidate in the batch (PRECTR-V2 pairs each
        with unexposed partners)."""
        clicked = self.exposed & (self.click > 0)
        _, request = self.requests()
        unexposed = torch.zeros(len(self), device=self.click.device)
        unexposed = unexposed.index_add(0, request, (~self.exposed).float())
        return {
            "all": float(len(self)),
            "exposed": float(self.exposed.sum()),
            "labelled": float((self.relevance >= 0).sum()),
            "clicked": float(clicked.sum()),
            "paired": float((clicked & (unexposed[request] > 0)).sum()),
        }

    def requests(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first row of each request of the batch, ``(R,)``, and each row's request among
        them, ``(B,)``. A batch holds whole requests, each in consecutive rows, so a
        request-level feature read at the first rows and indexed by the second is the feature
        itself, with what is computed from it computed once per request."""
        new = torch.ones(len(self), dtype=torch.bool, device=self.request.device)
        new[1:] = self.request[1:] != self.request[:-1]
        return torch.nonzero(new).squeeze(1), torch.cumsum(new.long(), 0) - 1

    def request_groups(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`requests` where every sequence has a row per candidate (the collator's
        batches: training, validation, offline scoring), so that what is read of a
        request-level history is read once per request; None for a batch of one row, and for a
        served one (:func:`request_batch`), whose request-level sequences come as one row that
        every candidate shares and are read as they come; and None while a graph is traced or
        exported (:func:`~prectr.capture.eager`), which reads every row's own."""
        rows = len(self)
        shapes = [self.categorical.shape[0], self.request.shape[0]]
        shapes += [s.shape[0] for s in self.sequences.values()]
        if eager() and rows > 1 and all(n == rows for n in shapes):
            return self.requests()
        return None

    def rows_of(self, kind: str) -> float:
        """The number of rows of ``kind`` a loss over this batch divides its sum by.

        One process: the batch's own count, so the loss is a plain mean. In a distributed
        step the trainer sets ``step_rows``, the count over all processes' batches divided by
        the number of processes: DDP averages the processes' gradients, so each process
        dividing its sum by that figure makes the step's gradient the gradient of the mean
        over every row of the step, however unevenly the rows fall between processes.
        """
        return (self.step_rows or self.local_rows())[kind]


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
