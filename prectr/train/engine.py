"""The training loop every model of the library runs on: the ranking models (``prectr train``),
the student encoder (distillation and SFT), the teacher's grade head and a fine-tuned
language-model teacher.

A loop is one or more :class:`~prectr.train.stages.Stage` s (:mod:`prectr.train.stages`) that
an :class:`Engine` runs in turn. A stage says what
an epoch's steps are, a step's losses (``loss`` is the one trained on, the others are logged)
and how to validate; the engine does the rest, the same way for every loop:

- the optimiser's step, with the gradients of the first module clipped to ``clip_norm`` (row-wise
  gradients too: :func:`prectr.train.optim.clip_grad_norm`);
- the mean of each loss over the last ``log_every`` steps and the samples per second, as JSON
  lines in ``train_log.jsonl`` (with ``step``, ``epoch`` and ``split``: the stage's name, or
  ``valid``) and, with ``tensorboard``, as TensorBoard scalars in ``tb/``;
- the C library's allocator kept from handing a step's freed memory back to the system
  (:mod:`prectr.train.allocator`), so the next step does not fault it in afresh;
- progress with an ETA (tqdm; a stage's steps per epoch are learnt from its first whole epoch
  when the stage does not know them);
- validation at each epoch's end, or every ``validate_every`` steps and after the last one;
- early stopping on a named validation metric (:class:`Stopping`: lower is better for
  :data:`prectr.metrics.LOWER_IS_BETTER`, higher for the others) after ``patience``
  validations without a better value, keeping the modules of the best one;
- ``checkpoints/best.pt`` (the modules at the best validation) and ``checkpoints/last.pt``
  (every ``checkpoint_every`` steps and at each epoch's end), written atomically
  (:mod:`prectr.train.checkpoint`).

Resuming is exact: ``last`` holds the modules, the optimiser, each process's RNG state and the
engine's state, including where the epoch stands (a stage's own ``position``, such as the rows
each shard has handed out, or else the steps taken into the epoch) and the losses not yet
logged. A stage whose steps are a function of (epoch, position) therefore resumes where the
checkpoint was written and ends with the same weights, and the same train log (the lines
written after the checkpoint are dropped on resuming), as a run that never stopped. (Not so a
model that carries state between steps outside its weights: the student's reused text states,
``model_params.student_reuse_steps``, start empty on resuming.) An engine
without a directory writes nothing and keeps the best modules in memory: a loop of seconds that
has nothing to resume.

In a run of several processes (:mod:`prectr.train.distributed`) every process runs the same
engine in lockstep: the stages' losses run through PyTorch's ``DistributedDataParallel`` over
the modules, which averages their gradients over the processes in the backward pass (a step's
``weight`` scales its process's share: :func:`~prectr.train.stages.shuffled_steps`); each
validation's metrics are the main process's; checkpoints gather the processes' positions and RNG
states, and only the main process logs, shows progress and writes.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from prectr.io import atomic_file
from prectr.train.allocator import KEEP_FREED_MB, keep_freed_memory
from prectr.train.checkpoint import load_checkpoint, load_into, save_checkpoint
from prectr.train.distributed import Processes
from prectr.train.optim import Optimizers, clip_grad_norm
from prectr.train.stages import Stage, Step, Stopping, StopTraining

TRAIN_LOG = "train_log.jsonl"


class _Objective(nn.Module):
    """A stage's loss over the engine's modules, as one module that ``DistributedDataParallel``
    can wrap."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.trained = nn.ModuleDict(modules)

    def forward(self, loss: Callable[[Any], dict[str, torch.Tensor]],
                batch: Any) -> dict[str, torch.Tensor]:  # fmt: skip
        return loss(batch)


class Engine:
    """Runs :class:`Stage` s over ``modules`` (by name, as the checkpoints hold them; the first
    is the model whose gradients are clipped, the others train along, e.g. a projection only a
    loss uses) with ``optimizer``; writes into ``directory`` (``None``: nothing written).

    Use it as a context manager around its :meth:`run` calls (it closes TensorBoard's writer
    and lets go of the ``DistributedDataParallel`` wrapper, whose reducer holds the process
    group).
    ``saved`` adds entries to every checkpoint (e.g. the model's name and prectr's version).
    ``keep_freed_mb`` is the freed memory the process's allocator keeps for the next step
    (:func:`~prectr.train.allocator.keep_freed_memory`; process-wide, 0 leaves it alone).
    """

    def __init__(
        self, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer | Optimizers, *,
        directory: str | Path | None = None, clip_norm: float | None = None,
        stopping: Stopping | None = None, log_every: int = 50, checkpoint_every: int = 0,
        tensorboard: bool = False, stop_after: int | None = None,
        processes: Processes | None = None, saved: dict[str, Any] | None = None,
        keep_freed_mb: int = KEEP_FREED_MB,
    ):  # fmt: skip
        keep_freed_memory(keep_freed_mb)
        self.modules, self.optimizer = modules, optimizer
        self.directory = None if directory is None else Path(directory)
        self.clip_norm, self.stopping = clip_norm, stopping
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.tensorboard, self.stop_after = tensorboard, stop_after
        self.processes = processes or Processes()
        self.saved = saved or {}
        self.state: dict[str, Any] = {
            "step": 0, "epochs": {}, "epoch_steps": 0, "position": None, "steps_per_epoch": {},
            "best": None, "stale": 0, "seconds": {}, "samples": {}, "data_wait_seconds": 0.0,
            "window": [],  # the losses of the steps since the last log line of this epoch
            "validated": None,  # the step of the last validation
        }  # fmt: skip
        self._best: dict[str, dict[str, torch.Tensor]] | None = None  # without a directory
        self._writer: Any = None
        self._parallel: nn.Module | None = None  # the modules in DistributedDataParallel
        self._window_samples, self._window_start = 0, time.perf_counter()  # for the rate
        self._unsaved = False  # steps or validations since `last` was written

    @property
    def model(self) -> nn.Module:
        return next(iter(self.modules.values()))

    def path(self, name: str) -> Path:
        """The checkpoint ``name`` (``best`` or ``last``) of the engine's directory."""
        if self.directory is None:
            raise ValueError("this engine has no directory to keep checkpoints in")
        return self.directory / "checkpoints" / f"{name}.pt"

    def resume(self) -> dict[str, Any] | None:
        """Restore the ``last`` checkpoint (modules, optimiser, this process's RNG state, the
        engine's state) and return it; ``None`` when there is none. The train log loses the
        lines written after the checkpoint (the resumed run writes them again)."""
        if self.directory is None or not self.path("last").is_file():
            return None
        checkpoint = load_checkpoint(self.path("last"))
        for name, module in self.modules.items():
            load_into(module, checkpoint[name], self.path("last"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        rng = checkpoint["rng"]  # one state per process of the run that wrote it
        if self.processes.rank < len(rng):
            torch.set_rng_state(rng[self.processes.rank])
        self.state = {**self.state, **checkpoint["state"]}
        log = self.directory / TRAIN_LOG
        if self.processes.main and log.is_file():
            lines = log.read_text().splitlines(keepends=True)
            kept = [x for x in lines if _logged_by(x, self.state["step"])]
            with atomic_file(log) as tmp:
                tmp.write_text("".join(kept))
        return checkpoint

    def load_best(self) -> None:
        """Put the modules of the best validation back (nothing when none was kept)."""
        if self._best is not None:
            states = self._best
        elif self.directory is not None and self.path("best").is_file():
            states = load_checkpoint(self.path("best"))
        else:
            return
        for name, module in self.modules.items():
            module.load_state_dict(states[name])

    def epochs(self, stage: str) -> int:
        """The epochs of ``stage`` done so far."""
        return self.state["epochs"].get(stage, 0)

    def reached_end(self, stage: Stage) -> bool:
        """Whether ``stage`` ran all its epochs or the run all its steps."""
        steps = self.state["step"]
        return self.epochs(stage.name) >= stage.epochs or bool(
            stage.max_steps and steps >= stage.max_steps
        )

    def stopped_early(self, stage: Stage) -> bool:
        return not self.reached_end(stage)

    def _done(self, stage: Stage) -> bool:
        s = self.stopping
        return self.reached_end(stage) or bool(
            s and s.patience and self.state["stale"] >= s.patience
        )

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._parallel is not None:
            self._parallel = None
            gc.collect()  # DDP's hooks hold it in reference cycles

    def fit(self, stage: Stage, resume: bool = False) -> None:
        """A loop of one stage, whole: resume from ``last`` when asked, run ``stage`` (as a
        context manager), then leave the process group if it was joined for this run
        (:meth:`Processes.leave`), whatever happened: after a failure at once, without waiting
        for the other processes."""
        if resume:
            self.resume()
        try:
            with self:
                self.run(stage)
        except BaseException:
            self.processes.leave(clean=False)
            raise
        self.processes.leave()

    def run(self, stage: Stage) -> None:
        """Run ``stage``'s remaining epochs, or until early stopping or ``max_steps``."""
        main = self.processes.main
        if self.tensorboard and self.directory is not None and main and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only here

            # a resumed run's scalars after its checkpoint are written again: purged
            purge = self.state["step"] or None
            self._writer = SummaryWriter(str(self.directory / "tb"), purge_step=purge)
        self._window_samples, self._window_start = 0, time.perf_counter()
        bar = tqdm(desc=stage.name, unit="step", leave=False,
                   disable=None if main else True)  # fmt: skip
        try:
            while not self._done(stage):
                self._show(bar, stage)
                if not self._epoch(stage, bar):
                    break
        finally:
            bar.close()
        scored = self.state["validated"] == self.state["step"]
        if stage.validate is not None and stage.validate_every and not scored:
            self._validate(stage)  # the last steps
        self.state["window"] = []
        if self._unsaved:
            self._save_last()

    def _show(self, bar: tqdm, stage: Stage) -> None:
        """The bar's total (for the ETA) and position in ``stage``, where its steps per epoch
        are known."""
        per_epoch = stage.steps_per_epoch or self.state["steps_per_epoch"].get(stage.name)
        epoch = self.epochs(stage.name)
        bar.set_description(f"{stage.name} epoch {epoch}")
        if not per_epoch:
            return
        done = epoch * per_epoch + self.state["epoch_steps"]
        left = stage.epochs * per_epoch - done
        if stage.max_steps:
            left = min(left, stage.max_steps - self.state["step"])
        bar.reset(total=done + max(left, 0))
        bar.update(done)

    def _epoch(self, stage: Stage, bar: tqdm) -> bool:
        """Take the steps left in the current epoch; ``False`` when the run stopped inside it
        (``max_steps``, or early stopping after a validation between steps)."""
        s = self.state
        epoch = self.epochs(stage.name)
        for module in self.modules.values():
            module.train()
        start = s["position"] if stage.position is not None else s["epoch_steps"]
        steps = stage.steps(epoch, start)
        started = time.perf_counter()
        while True:
            waited = time.perf_counter()
            step = next(steps, None)
            s["data_wait_seconds"] += time.perf_counter() - waited
            if step is None:
                break
            if self._done(stage):
                return False
            self._step(stage, step)
            now = time.perf_counter()
            s["seconds"][stage.name] = s["seconds"].get(stage.name, 0.0) + now - started
            s["samples"][stage.name] = s["samples"].get(stage.name, 0) + step.samples
            started = now
            bar.update()
            self._after_step(stage, step, bar)
        s["steps_per_epoch"].setdefault(stage.name, s["epoch_steps"])
        if stage.validate is not None and not stage.validate_every:
            self._validate(stage)
        s["epochs"][stage.name] = epoch + 1
        s["epoch_steps"], s["position"], s["window"] = 0, None, []
        if stage.epoch_end is not None:
            stage.epoch_end(epoch + 1)
        self._save_last()
        return True

    def _losses(self, stage: Stage, batch: Any) -> dict[str, torch.Tensor]:
        """The stage's losses on ``batch``; in a run of several processes through
        ``DistributedDataParallel``, set up at the first step (after a resume: it starts every
        process from the main process's modules). It looks for parameters a stage leaves
        unused (stage 1 trains only a model's relevance module)."""
        if not self.processes.distributed:
            return stage.loss(batch)
        if self._parallel is None:
            device = next(self.model.parameters()).device
            self._parallel = nn.parallel.DistributedDataParallel(
                _Objective(self.modules), find_unused_parameters=True,
                device_ids=[device.index] if device.type == "cuda" else None,
            )  # fmt: skip
        return self._parallel(stage.loss, batch)

    def _step(self, stage: Stage, step: Step) -> None:
        losses = self._losses(stage, step.batch)
        self.optimizer.zero_grad(set_to_none=True)
        (losses["loss"] * step.weight).backward()
        if self.clip_norm is not None:
            clip_grad_norm(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        if stage.after_step is not None:
            stage.after_step()
        self.state["step"] += 1
        self.state["epoch_steps"] += 1
        self._unsaved = True
        self.state["window"].append({k: float(v.detach()) for k, v in losses.items()})
        self._window_samples += step.samples

    def _after_step(self, stage: Stage, step: Step, bar: tqdm) -> None:
        """Log, validate and checkpoint where the step count says so; stop at ``stop_after``."""
        n = self.state["step"]
        if n % self.log_every == 0:
            rate = self._window_samples / (time.perf_counter() - self._window_start)
            window = self.state["window"]
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            self._record(stage.name, {**mean, "samples_per_s": rate}, stage)
            bar.set_postfix(loss=f"{mean['loss']:.4f}", samples_s=f"{rate:,.0f}")
            self.state["window"], self._window_samples = [], 0
            self._window_start = time.perf_counter()
        if stage.validate is not None and stage.validate_every and n % stage.validate_every == 0:
            self._validate(stage)
        if self.checkpoint_every and n % self.checkpoint_every == 0:
            if stage.position is not None:
                self.state["position"] = stage.position()
            self._save_last()
        if self.stop_after is not None and n >= self.stop_after:
            raise StopTraining(f"stopped after step {n}")

    def _validate(self, stage: Stage) -> None:
        """Score the stage's validation, log it, and keep the modules when they are the best
        so far by :attr:`stopping`."""
        assert stage.validate is not None
        metrics = self.processes.broadcast(stage.validate())  # one decision for every process
        self.state["validated"] = self.state["step"]
        for module in self.modules.values():
            module.train()
        self._record("valid", metrics, stage)
        self._unsaved = True
        if self.stopping is None:
            return
        if self.stopping.better(metrics, self.state["best"]):
            where = {"epoch": self.epochs(stage.name), "step": self.state["step"]}
            self.state["best"] = {**metrics, **where}
            self.state["stale"] = 0
            self._save_best()
        else:
            self.state["stale"] += 1

    def _record(self, split: str, values: dict[str, float], stage: Stage) -> None:
        """One line of the train log (and TensorBoard scalars), from the main process."""
        if self.directory is None or not self.processes.main:
            return
        step = self.state["step"]
        entry = {"step": step, "epoch": self.epochs(stage.name), "split": split, **values}
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / TRAIN_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"{split}/{k}", v, step)

    def _states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: module.state_dict() for name, module in self.modules.items()}

    def _save_best(self) -> None:
        if self.directory is None:
            self._best = {
                name: {k: v.clone() for k, v in state.items()}
                for name, state in self._states().items()
            }
        elif self.processes.main:
            best = {**self._states(), "state": dict(self.state), **self.saved}
            save_checkpoint(self.path("best"), best)

    def _save_last(self) -> None:
        """Write ``last``; every process must call this (it gathers their RNG states)."""
        self._unsaved = False
        if self.directory is None:
            return
        rng = self.processes.gather(torch.get_rng_state())
        if not self.processes.main:
            return
        save_checkpoint(self.path("last"), {
            **self._states(), "optimizer": self.optimizer.state_dict(), "rng": rng,
            "state": dict(self.state), **self.saved,
        })  # fmt: skip


def _logged_by(line: str, step: int) -> bool:
    """Whether a train-log line was written by ``step`` (a line cut short by a kill: no)."""
    try:
        return json.loads(line)["step"] <= step
    except ValueError:
        return False
