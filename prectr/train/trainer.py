"""Training every registered model, in one process or many, on the training engine.

AdamW with three learning rates (embedding tables, dense layers, a text encoder if the model has
one; with ``train.sparse_embeddings``, lazy Adam on row-wise gradients for the tables:
:mod:`prectr.train.optim`), gradient clipping, an optional stage 1 that fits a model's
relevance module alone on the human grades (``train.relevance_epochs``), validation after each
epoch, early stopping on a chosen metric, and ``best``/``last`` checkpoints written atomically:
the two stages run on :class:`prectr.train.engine.Engine`. A run directory holds the config, a
log, the train log (JSON lines, also TensorBoard scalars), ``metrics.json`` and the checkpoints.

Under ``torchrun`` the same loop runs in every process: the main process prepares the data (the
others wait, and fail with its error if it fails), each process streams its own shards,
PyTorch's ``DistributedDataParallel`` averages the gradients, and only the main process logs and
writes. The processes step in lockstep: one whose shards are done takes steps that add no
gradient until every process is done. Validation metrics are computed across the processes.

Resuming is exact: the order of a shard's rows is a function of (seed, epoch, shard), and the
``last`` checkpoint holds the model, the optimizer, each process's RNG state and how many rows
of each shard the epoch has used, so a run killed at any step and resumed ends with the same
weights and metrics as one that never stopped (except with the student's reused text states,
``model_params.student_reuse_steps``, which are not checkpointed and are held per process).
Resumed with another number of processes, it reads each remaining row once.
"""

from __future__ import annotations

import json
import logging
import os
import resource
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from prectr import __version__
from prectr.config import ExperimentConfig, experiment_from_dict, saved_experiment
from prectr.data.dataset import LOSS_ROWS, Batch
from prectr.data.stream import BatchStream
from prectr.io import atomic_file
from prectr.metrics.distributed import distributed_click_metrics
from prectr.models.calibration import calibration_path, fit_calibrator, save_calibrator
from prectr.train.checkpoint import load_checkpoint
from prectr.train.data import PreparedData, build_run_model, load_prepared, open_run
from prectr.train.distributed import Processes, join
from prectr.train.engine import Engine
from prectr.train.optim import build_optimizer
from prectr.train.predict import predict
from prectr.train.stages import Stage, Step, Stopping


def param_groups(model: nn.Module, config: ExperimentConfig) -> list[dict[str, Any]]:
    """Trainable parameters in four groups: the position bias, embedding tables, the text
    encoder (a submodule named ``text_encoder``) and the rest.

    The position bias has its own learning rate (``train.lr_position``): its few scalars must
    travel the log-odds range of examination (about 2.5 between the first and the tenth slot)
    within an epoch of a small log, and Adam moves a parameter by at most its learning rate per
    step; at the embedding rate it stops short and leaves the rest to the model's features."""
    t = config.train
    groups: dict[str, list[nn.Parameter]] = {
        "position": [], "embedding": [], "encoder": [], "dense": []
    }  # fmt: skip
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name == "position_bias.weight":
            groups["position"].append(p)
        elif ".text_encoder." in f".{name}":
            groups["encoder"].append(p)
        elif id(p) in embedding_ids:
            groups["embedding"].append(p)
        else:
            groups["dense"].append(p)
    settings = {
        "position": (t.lr_position, 0.0),
        "embedding": (t.lr_embedding, 0.0),
        "encoder": (t.lr_encoder, t.weight_decay),
        "dense": (t.lr_dense, t.weight_decay),
    }
    return [
        {"params": ps, "lr": settings[k][0], "weight_decay": settings[k][1], "name": k}
        for k, ps in groups.items()
        if ps
    ]


def run_logger(run_dir: Path, main: bool = True) -> logging.Logger:
    """The run's ``log.txt`` logger in the main process; a silent one elsewhere."""
    if not main:
        return logging.getLogger("prectr.train.worker")
    log = logging.getLogger(f"prectr.train.{run_dir}")
    log.setLevel(logging.INFO)
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``train.device``: ``cpu``, ``cuda`` (this process's GPU) or ``auto`` (a GPU if any)."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device cuda: no GPU is visible to this process")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


class Trainer:
    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path,
        resume: bool = False,
        log_dir: str | Path | None = None,
        stop_after: int | None = None,
        overwrite: bool = False,
    ):
        self.config, self.run_dir = config, Path(run_dir)
        t = config.train
        self.device = resolve_device(t.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.processes: Processes = join("nccl" if self.device.type == "cuda" else "gloo")
        self.processes.on_main(lambda: open_run(config, self.run_dir, resume, log_dir, overwrite))
        self.log = run_logger(self.run_dir, self.processes.main)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.data: PreparedData = load_prepared(self.run_dir, config.data.shards_uri)
        torch.manual_seed(t.seed + self.processes.rank)
        self.model = build_run_model(config, self.data.encoder).to(self.device)
        self.model.position_bias.weight.requires_grad_(t.position_bias)
        groups = param_groups(self.model, config)
        self.optimizer = build_optimizer(self.model, groups, t.sparse_embeddings,
                                         t.fused_optimizer)  # fmt: skip
        self.engine = Engine(
            {"model": self.model}, self.optimizer, directory=self.run_dir,
            clip_norm=t.clip_norm, stopping=Stopping(t.early_stopping_metric, t.patience),
            log_every=t.log_every, checkpoint_every=t.checkpoint_every, tensorboard=True,
            stop_after=stop_after, processes=self.processes,
            saved={"model_name": config.model, "prectr_version": __version__},
            keep_freed_mb=t.keep_freed_mb,
        )  # fmt: skip
        checkpoint = self.engine.resume() if resume else None
        if checkpoint is None:
            self.model.start_at_rate(self.data.click_rate())
        else:
            s = self.engine.state
            self.log.info("resumed at epoch %d step %d with %d process(es), written by %d",
                          self.engine.epochs("train"), s["step"], self.processes.world_size,
                          len(checkpoint["rng"]))  # fmt: skip

    def close(self) -> None:
        """Release the run's processes: the group itself if this trainer joined it
        (:meth:`Processes.leave`; the engine has let go of its ``DistributedDataParallel``
        wrapper, which holds the group, when its run ended)."""
        self.processes.leave()

    def validate(self) -> dict[str, float]:
        """Click metrics on the validation split, over the rows of every process: ranking
        metrics of the served score, logloss and calibration of the probability at each
        impression's logged position."""
        stream = self._stream("valid", shuffle=False)
        p = predict(self.model, stream.epoch(), self.device)
        exposed = p["exposed"]
        request = p["request"][exposed]
        metrics = distributed_click_metrics(
            p["click"][exposed].astype(np.int64), p["score"][exposed],
            self.data.user_of_request[request], request, p["shown"][exposed],
        )  # fmt: skip
        metrics = {k: v for k, v in metrics.items() if not np.isnan(v)}
        self.log.info("epoch %d valid %s", self.engine.epochs("train"), metrics)
        return metrics

    def _stream(self, split: str, shuffle: bool, rows: str = "exposed",
                counts: str | None = None) -> BatchStream:  # fmt: skip
        return self.data.stream(split, self.config, shuffle, rows, self.processes.rank,
                                self.processes.world_size, counts)  # fmt: skip

    def _stage(self, name: str, epochs: int, rows: str) -> Stage:
        """Training ``name`` (``relevance``: stage 1 on the labelled rows, ``train``: the
        model's loss on its training rows) as the engine runs it. Stage 1's examples are
        graded pairs, most of them unexposed candidates, so its batches count rows whatever
        ``data.batch_counts`` says (counted in exposed impressions, a batch of ``bench``
        would hold about 22,000 graded rows and the stage take a tenth of its steps)."""
        counts = "rows" if name == "relevance" else None
        stream = self._stream("train", True, rows, counts)
        loss = self._relevance_loss if name == "relevance" else self._joint_loss
        return Stage(name, epochs, partial(self._steps, stream), loss,
                     position=partial(self._position, stream))  # fmt: skip

    def _relevance_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"loss": self.model.relevance_loss(batch)}

    def _joint_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.model.loss(batch, self.model(batch))

    def fit(self) -> dict[str, Any]:
        t = self.config.train
        with self.engine:
            if t.relevance_epochs:
                stage = self._stage("relevance", t.relevance_epochs, "labelled")
                stage.epoch_end = self._relevance_epoch_end
                self.engine.run(stage)
            stage = self._stage("train", t.epochs, self.model.training_rows)
            stage.validate, stage.validate_every = self.validate, t.validate_every
            self.engine.run(stage)
        self.calibrate()
        return self._write_metrics()

    def _relevance_epoch_end(self, epochs: int) -> None:
        """Stage 1 fits the relevance module alone on the labelled pairs (only its parameters
        get gradients); after its last epoch the model is told the stage ended (e.g. to keep a
        reference copy)."""
        if epochs == self.config.train.relevance_epochs:
            self.model.end_relevance_stage()
        self.log.info("relevance epoch %d done", epochs)

    def calibrate(self) -> None:
        """Fit ``train.calibration`` for the ``best`` and ``last`` checkpoints on the exposed
        validation impressions at their logged positions (main process, every validation
        row), and save each beside its checkpoint; the model ends at the ``last`` weights."""
        kind = self.config.train.calibration
        if not self.processes.main:
            return
        if kind == "none":  # a former fit's files (a resumed or reused run) would still apply
            for name in ("best", "last"):
                calibration_path(self.engine.path(name)).unlink(missing_ok=True)
            return
        last = {k: v.clone() for k, v in self.model.state_dict().items()}
        stream = self.data.stream("valid", self.config, False, "exposed", 0, 1)
        calibrator = None
        for name in ("best", "last"):
            path = self.engine.path(name)
            if not path.is_file():
                continue
            # the model holds the last weights already; only best's come from the file
            self.model.load_state_dict(last if name == "last" else load_checkpoint(path)["model"])
            p = predict(self.model, stream.epoch(), self.device)
            exposed = p["exposed"]
            calibrator = fit_calibrator(kind, p["shown_logit"][exposed], p["click"][exposed])
            save_calibrator(calibrator, path)
            self.log.info("%s calibration of %s: %s", kind, name, calibrator.to_dict())
        self.model.load_state_dict(last)
        if calibrator is not None:  # last's, as a reload would have it
            self.model.calibrator = calibrator.to(self.device)

    def _position(self, stream: BatchStream) -> dict[str, int]:
        """How many rows of each shard the epoch has used, over every process."""
        return {k: v for p in self.processes.gather(stream.position) for k, v in p.items()}

    def _steps(
        self, stream: BatchStream, epoch: int, position: dict[str, int] | None
    ) -> Iterator[Step]:
        """The epoch's steps of this process from ``position``, in lockstep with the others:
        each step's batch, the exposed rows of the step over all processes and its loss weight
        (0 once this process's shards are done). In a distributed run each batch carries the
        step's rows per process (``Batch.step_rows``), which its losses divide by."""
        batches = stream.epoch(epoch, position, self.config.data.prefetch)
        spare: Batch | None = None
        world = self.processes.world_size
        while True:
            batch = next(batches, None)
            rows = batch.local_rows() if batch is not None else dict.fromkeys(LOSS_ROWS, 0.0)
            active, *totals = self.processes.sum(batch is not None, *(rows[k] for k in LOSS_ROWS))
            if not active:
                return
            if batch is None and spare is None:
                raise RuntimeError(
                    f"process {self.processes.rank} has no {stream.rows} rows in its shards; "
                    "use fewer processes or more shards (data.shards)"
                )
            weight = 1.0 if batch is not None else 0.0
            spare = batch if batch is not None else spare
            step = dict(zip(LOSS_ROWS, totals, strict=True))
            if self.processes.distributed:
                spare.step_rows = {k: v / world for k, v in step.items()}
            yield Step(spare.to(self.device), int(step["exposed"]), weight)

    def _write_metrics(self) -> dict[str, Any]:
        s = self.engine.state
        seconds, samples = s["seconds"].get("train", 0.0), s["samples"].get("train", 0)
        peak = self.processes.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        waits = self.processes.gather(s["data_wait_seconds"] / max(seconds, 1e-9))
        result = {
            "model": self.config.model,
            "best_valid": s["best"],
            "epochs": self.engine.epochs("train"),
            "steps": s["step"],
            "processes": self.processes.world_size,
            # a run's numbers depend on the threads its kernels split sums over: the same
            # seed and code at another count lands elsewhere (docs/fidelity.md)
            "threads": torch.get_num_threads(),
            "train_samples": samples,
            "train_samples_per_s": samples / max(seconds, 1e-9),
            "data_wait_share": max(waits),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "peak_rss_mb": max(peak),
            "peak_rss_mb_per_process": peak,
        }
        if self.processes.main:
            with atomic_file(self.run_dir / "metrics.json") as tmp:
                tmp.write_text(json.dumps(result, indent=2) + "\n")
        return result


def calibrate_run(run_dir: str | Path, kind: str) -> None:
    """Fit the post-hoc calibration ``kind`` (``train.calibration``) of a trained run on its
    validation days, as training would have at its end, without training again: the run's
    config then names ``kind``, and ``best`` and ``last`` carry its fit (``none`` removes a
    former fit)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    values = saved_experiment(run_dir).to_dict()
    values["train"]["calibration"] = kind
    config = experiment_from_dict(values, f"{path} with calibration {kind!r}")  # checks the kind
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint to calibrate (train it first)")
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    trainer = Trainer(config, run_dir, resume=True)
    try:
        trainer.calibrate()
    finally:
        trainer.close()
