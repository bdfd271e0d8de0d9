"""The processes of one training run, as ``torchrun`` launches them.

``torchrun --nproc-per-node N`` (with ``--nnodes``/``--rdzv-*`` across machines) sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process; :func:`join` reads them and joins
the process group (``nccl`` for GPUs, ``gloo`` on CPU). Without them the run is one process
and every collective here is the identity, so the trainer has one code path for both.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from prectr.metrics.distributed import all_sum

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # joined here (from torchrun's environment), so left here too

    @property
    def main(self) -> bool:
        """The process that prepares data, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, value: T) -> T:
        """The main process's ``value``, in every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, by rank, in every process."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums of ``values`` over the processes."""
        return all_sum(*values)

    def on_main(self, work: Callable[[], None]) -> None:
        """Run ``work`` (writing the run's files, say) in the main process; the others wait,
        and fail with its error if it fails."""
        error: BaseException | None = None
        if self.main:
            try:
                work()
            except Exception as err:  # the other processes must hear of it, then it is raised
                error = err
        message = self.broadcast(None if error is None else f"{error}")
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(f"the main process (rank 0) failed: {message}")

    def leave(self, clean: bool = True) -> None:
        """Destroy the process group :func:`join` set up (one a launcher set up is the
        launcher's to destroy), as :func:`end_group` does. A group left for the interpreter's
        exit to tear down can abort the process while the backend's threads still hold
        tensors."""
        if self.owns_group and dist.is_initialized():
            end_group(clean)


def end_group(clean: bool = True) -> None:
    """Destroy the process group; after a clean run, once every process has arrived. A process
    that destroys its group while another still exchanges with it can abort (SIGABRT at exit,
    seen with gloo in about one two-process run in three), so none leaves before all have
    arrived. A process that failed (``clean=False``) leaves at once: waiting for the others
    would hold them all until the group's timeout, and its leaving is what stops the others'
    collectives with an error."""
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def join(backend: str = "gloo", timeout_minutes: float = 60.0) -> Processes:
    """This process's place in the run: the process group a launcher has already set up (Ray
    Train's ``TorchTrainer``, for one), else the one torchrun's environment describes, joined
    with ``backend``; one process when neither exists."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), local_rank)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return Processes(dist.get_rank(), world_size, local_rank, owns_group=True)
