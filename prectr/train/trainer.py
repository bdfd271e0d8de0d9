"""One training loop for every registered model.

AdamW with three learning rates (embedding tables, dense layers, a text encoder if the model has
one), gradient clipping, an optional stage 1 that fits a model's relevance module alone on the
human grades (``train.relevance_epochs``), validation after each epoch, early stopping on a
chosen metric, and ``best``/``last`` checkpoints written atomically. A run directory holds the
config, a log, the train log (JSON lines, also TensorBoard scalars), ``metrics.json`` and the
checkpoints.

Resuming is exact: the batch order is a function of (seed, epoch), and the ``last`` checkpoint
holds the model, the optimizer, the RNG state and the position in the epoch, so a run killed at
any step and resumed ends with the same weights and metrics as one that never stopped.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from prectr import __version__
from prectr.config import ExperimentConfig
from prectr.data.dataset import Batch
from prectr.evaluation import click_metrics
from prectr.io import atomic_file
from prectr.models import RankingModel, build_model
from prectr.train.checkpoint import load_checkpoint, save_checkpoint
from prectr.train.data import PreparedData, prepare, read_training_log

LOWER_IS_BETTER = {"logloss"}


class StopTraining(Exception):
    """Raised by the ``stop_after`` hook to imitate a run killed at a given step."""


def param_groups(model: nn.Module, config: ExperimentConfig) -> list[dict[str, Any]]:
    """Trainable parameters in three groups: embedding tables, the text encoder (a submodule
    named ``text_encoder``) and the rest."""
    t = config.train
    groups: dict[str, list[nn.Parameter]] = {"embedding": [], "encoder": [], "dense": []}
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if ".text_encoder." in f".{name}":
            groups["encoder"].append(p)
        elif id(p) in embedding_ids:
            groups["embedding"].append(p)
        else:
            groups["dense"].append(p)
    settings = {
        "embedding": (t.lr_embedding, 0.0),
        "encoder": (t.lr_encoder, t.weight_decay),
        "dense": (t.lr_dense, t.weight_decay),
    }
    return [
        {"params": ps, "lr": settings[k][0], "weight_decay": settings[k][1], "name": k}
        for k, ps in groups.items()
        if ps
    ]


@torch.no_grad()
def predict(model: RankingModel, batches: Iterable[Batch]) -> dict[str, np.ndarray]:
    """Scores (and grade distributions where the model has them) for every row of ``batches``."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        out = model(batch)
        values = {
            "score": model.score(out),
            "click": batch.click,
            "exposed": batch.exposed,
            "request": batch.request,
            "item": batch.item,
        }
        if "grade_logits" in out:
            values["grades"] = torch.softmax(out["grade_logits"], -1)
        for k, v in values.items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


class Trainer:
    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path,
        resume: bool = False,
        log_dir: str | Path | None = None,
        stop_after: int | None = None,
    ):
        self.config, self.run_dir, self.stop_after = config, Path(run_dir), stop_after
        log = read_training_log(config, log_dir)  # a log that fails validation creates no run
        self._open_run(resume)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        self.data: PreparedData = prepare(config, self.run_dir, log)
        torch.manual_seed(config.train.seed)
        self.model = build_model(
            config.model, self.data.encoded.specs, self.data.encoded.vocab_sizes,
            config.model_params,
        )  # fmt: skip
        self.model.position_bias.weight.requires_grad_(config.train.position_bias)
        self._check_stages()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, config))
        self.state = {
            "relevance_epoch": 0, "epoch": 0, "step_in_epoch": 0, "step": 0, "best": None,
            "stale": 0, "train_seconds": 0.0, "train_samples": 0,
        }  # fmt: skip
        if resume and self.last_path.is_file():
            self._restore(load_checkpoint(self.last_path))

    def _check_stages(self) -> None:
        stage1 = self.config.train.relevance_epochs
        if stage1 and not hasattr(self.model, "relevance_loss"):
            raise ValueError(f"train.relevance_epochs: model {self.config.model!r} has no "
                             "relevance module to fit in stage 1")  # fmt: skip
        if not stage1 and getattr(self.model, "requires_relevance_stage", False):
            raise ValueError(f"model {self.config.model!r} as configured anchors to the stage-1 "
                             "relevance module: set train.relevance_epochs >= 1")  # fmt: skip

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def _open_run(self, resume: bool) -> None:
        config_path = self.run_dir / "config.yaml"
        wanted = self.config.to_dict()
        if resume:
            if not config_path.is_file():
                raise FileNotFoundError(f"{self.run_dir}: nothing to resume (no config.yaml)")
            saved = yaml.safe_load(config_path.read_text())
            if saved != wanted:
                raise ValueError(f"{self.run_dir}: the config differs from the run's; resume "
                                 "needs the same config")  # fmt: skip
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise FileExistsError(f"{self.run_dir} is not empty (pass --resume to continue it)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(config_path) as tmp:
            tmp.write_text(yaml.safe_dump(wanted, sort_keys=False))
        self.log = logging.getLogger(f"prectr.train.{self.run_dir}")
        self.log.setLevel(logging.INFO)
        if not self.log.handlers:
            handler = logging.FileHandler(self.run_dir / "log.txt")
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(handler)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        self.state = {"relevance_epoch": 0, **checkpoint["state"]}
        self.log.info("resumed at epoch %d step %d", self.state["epoch"], self.state["step"])

    def _checkpoint(self, name: str) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / f"{name}.pt",
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "state": dict(self.state),
                "model_name": self.config.model,
                "prectr_version": __version__,
            },
        )

    def _record(self, writer: SummaryWriter, split: str, values: dict[str, float]) -> None:
        entry = {"step": self.state["step"], "epoch": self.state["epoch"], "split": split, **values}
        with open(self.run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        for k, v in values.items():
            writer.add_scalar(f"{split}/{k}", v, self.state["step"])

    def validate(self) -> dict[str, float]:
        p = predict(self.model, self.data.stream("valid", self.config, shuffle=False).epoch())
        exposed = p["exposed"]
        request = p["request"][exposed]
        metrics = click_metrics(
            p["click"][exposed].astype(np.int64), p["score"][exposed],
            self.data.user_of_request[request], request,
        )  # fmt: skip
        return {k: v for k, v in metrics.items() if v is not None}

    def _better(self, metrics: dict[str, float]) -> bool:
        key = self.config.train.early_stopping_metric
        best = self.state["best"]
        if best is None:
            return True
        return metrics[key] < best[key] if key in LOWER_IS_BETTER else metrics[key] > best[key]

    def fit(self) -> dict[str, Any]:
        t = self.config.train
        stream = self.data.stream("train", self.config, True, self.model.training_rows)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state["step"] or None)
        try:
            self._relevance_stage(writer)
            while self.state["epoch"] < t.epochs and self.state["stale"] < t.patience:
                self._train_epoch(stream, writer)
                metrics = self.validate()
                self._record(writer, "valid", metrics)
                self.log.info("epoch %d valid %s", self.state["epoch"], metrics)
                if self._better(metrics):
                    self.state["best"] = {**metrics, "epoch": self.state["epoch"]}
                    self.state["stale"] = 0
                    self._checkpoint("best")
                else:
                    self.state["stale"] += 1
                self.state["epoch"] += 1
                self.state["step_in_epoch"] = 0
                self._checkpoint("last")
        finally:
            writer.close()
        return self._write_metrics()

    def _relevance_stage(self, writer: SummaryWriter) -> None:
        """Stage 1: the relevance module alone on the labelled pairs (only its parameters get
        gradients), then the model is told the stage ended (e.g. to keep a reference copy)."""
        t = self.config.train
        stream = self.data.stream("train", self.config, True, "labelled")
        while self.state["relevance_epoch"] < t.relevance_epochs:
            self._train_epoch(stream, writer, stage="relevance")
            self.state["relevance_epoch"] += 1
            self.state["step_in_epoch"] = 0
            if self.state["relevance_epoch"] == t.relevance_epochs:
                self.model.end_relevance_stage()
            self.log.info("relevance epoch %d done", self.state["relevance_epoch"])
            self._checkpoint("last")

    def _train_epoch(self, stream, writer: SummaryWriter, stage: str = "joint") -> None:
        t = self.config.train
        self.model.train()
        epoch = self.state["relevance_epoch" if stage == "relevance" else "epoch"]
        bar = tqdm(
            stream.epoch(epoch, skip=self.state["step_in_epoch"]),
            desc=f"{stage} epoch {epoch}", unit="batch", disable=None, leave=False,
        )  # fmt: skip
        window_loss, window_samples, window_start = [], 0, time.perf_counter()
        for batch in bar:
            started = time.perf_counter()
            if stage == "relevance":
                losses = {"loss": self.model.relevance_loss(batch)}
            else:
                losses = self.model.loss(batch, self.model(batch))
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm)
            self.optimizer.step()
            if stage == "joint":  # throughput is the click-training rate
                self.state["train_seconds"] += time.perf_counter() - started
                self.state["train_samples"] += int(batch.exposed.sum())
            self.state["step"] += 1
            self.state["step_in_epoch"] += 1
            window_loss.append({k: float(v.detach()) for k, v in losses.items()})
            window_samples += int(batch.exposed.sum())
            if self.state["step"] % t.log_every == 0:
                rate = window_samples / (time.perf_counter() - window_start)
                mean = {k: float(np.mean([w[k] for w in window_loss])) for k in window_loss[0]}
                split = "train" if stage == "joint" else stage
                self._record(writer, split, {**mean, "samples_per_s": rate})
                bar.set_postfix(loss=f"{mean['loss']:.4f}", samples_s=f"{rate:,.0f}")
                window_loss, window_samples, window_start = [], 0, time.perf_counter()
            if self.state["step"] % t.checkpoint_every == 0:
                self._checkpoint("last")
            if self.stop_after is not None and self.state["step"] >= self.stop_after:
                raise StopTraining(f"stopped after step {self.state['step']}")

    def _write_metrics(self) -> dict[str, Any]:
        s = self.state
        result = {
            "model": self.config.model,
            "best_valid": s["best"],
            "epochs": s["epoch"],
            "steps": s["step"],
            "train_samples": s["train_samples"],
            "train_samples_per_s": s["train_samples"] / max(s["train_seconds"], 1e-9),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        with atomic_file(self.run_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        return result
