"""What a training loop is made of, for :class:`prectr.train.engine.Engine` to run: a
:class:`Stage` (an epoch's steps, a step's losses, a validation), its :class:`Step` s, the
early-stopping rule (:class:`Stopping`) and :func:`shuffled_steps`, the steps of a stage whose
rows sit in memory, shared out among the processes of a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prectr.metrics import LOWER_IS_BETTER
from prectr.train.distributed import Processes


class StopTraining(Exception):
    """Raised by an engine's ``stop_after`` hook to imitate a run killed at a given step."""


@dataclass(frozen=True)
class Step:
    """One optimiser step's batch, the samples it trains on (over every process; for the
    throughput) and the weight of its loss (0 for a process whose data is done while the
    others step on)."""

    batch: Any
    samples: int
    weight: float = 1.0


@dataclass(frozen=True)
class Stopping:
    """Early stopping on the validation metric ``metric``: the run stops after ``patience``
    validations without a better value (0: never stops early). Only a strictly better value
    counts, so the first of equal scores stays the best."""

    metric: str
    patience: int = 0

    def better(self, metrics: dict[str, float], best: dict[str, Any] | None) -> bool:
        """Whether ``metrics`` beat ``best``; an undefined (nan) value is the worst, so a
        first validation whose figure is undefined (a Spearman of constant predictions) does
        not block every later one."""
        if best is None:
            return True
        new, old = metrics[self.metric], best[self.metric]
        if math.isnan(new) or math.isnan(old):
            return not math.isnan(new)
        return new < old if self.metric in LOWER_IS_BETTER else new > old


@dataclass
class Stage:
    """What one part of a training loop does; the engine runs its epochs.

    ``steps(epoch, position)`` gives the epoch's steps from ``position`` on: the value
    ``position()`` returned at the checkpoint resumed from (``None`` at an epoch's start), or,
    for a stage without ``position``, the number of steps already taken into the epoch.
    ``epoch_end(epochs)`` is called after each epoch with the epochs done so far, and
    ``after_step()`` after each optimiser step (e.g. to update an average of the weights).
    """

    name: str  # the split of its lines in the train log: "train", "relevance"
    epochs: int
    steps: Callable[[int, Any], Iterator[Step]]
    loss: Callable[[Any], dict[str, torch.Tensor]]
    validate: Callable[[], dict[str, float]] | None = None
    validate_every: int = 0  # steps between validations, and one after the last (0: per epoch)
    max_steps: int = 0  # stop once the run has taken this many steps in all (0: every epoch)
    steps_per_epoch: int | None = None  # for the ETA (None: learnt from the first whole epoch)
    position: Callable[[], Any] | None = None
    epoch_end: Callable[[int], None] | None = None
    after_step: Callable[[], None] | None = None


def shuffled_steps(
    rows: np.ndarray, batch_size: int, seed: int, processes: Processes | None = None
) -> Callable[[int, int], Iterator[Step]]:
    """A stage's ``steps`` over rows held in memory: each epoch takes ``rows`` in an order fixed
    by (``seed``, epoch), in batches of ``batch_size`` over all processes, from its
    ``steps_done``-th batch on (so a resumed epoch goes on where it stopped). Each process
    trains on its share of a batch, with the weight that makes the average of the processes'
    gradients the batch's: its rows over the batch's rows per process (1 in one process; 0, on
    one row, for a process that a batch of fewer rows than processes leaves without any)."""
    p = processes or Processes()

    def steps(epoch: int, steps_done: int) -> Iterator[Step]:
        order = np.random.default_rng([seed, epoch]).permutation(rows)
        for start in range(steps_done * batch_size, order.size, batch_size):
            batch = order[start : start + batch_size]
            share = np.array_split(batch, p.world_size)[p.rank]
            if share.size == 0:
                yield Step(batch[:1], batch.size, 0.0)
            else:
                yield Step(share, batch.size, share.size * p.world_size / batch.size)

    return steps
