"""Training the student: distillation from a teacher's labels, then fine-tuning on human grades.

``distill``: on every training pair the teacher labelled (labelled by humans or not), the KL
divergence to the teacher's grade distribution at a temperature, plus, with ``hidden_weight``,
the MSE between a linear projection of the student's pooled state and the teacher's hidden
state (the projection is trained along and dropped afterwards). ``sft``: cross-entropy on the
human grades of the training days, starting from a distilled student (``init``) or from scratch
(the ablation that shows what distillation is worth).

A run directory holds ``config.json``, ``tokenizer.json`` (trained on the log's training-day
queries and titles unless ``init`` or ``tokenizer`` brings one; the trainer breaks frequency ties
arbitrarily, so runs to be compared should share one), ``train_log.jsonl``, ``checkpoints/last.pt``
(student, projection, optimizer, RNG, position in the epoch: a killed run resumes at the same
step and ends with the same weights), the exported ``student/`` directory and ``metrics.json``
with the held-out evaluation (:mod:`prectr.encoder.evaluate`; ``held_out_skipped`` says why when
no held-out row is graded) and the pair counts of :func:`prectr.encoder.pairs.read_pairs`. Every
write is atomic.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prectr.encoder.evaluate import NothingToScore, evaluate_held_out
from prectr.encoder.pairs import PairsConfig, read_pairs, read_teacher_labels
from prectr.encoder.student import Student, StudentConfig, load_student, save_student
from prectr.encoder.tokenizer import TextTokenizer
from prectr.io import atomic_file, claim_run_dir
from prectr.losses.distill import distill_kl, hidden_mse
from prectr.train.checkpoint import StopTraining, load_checkpoint, save_checkpoint

KINDS = ("distill", "sft")


@dataclass
class EncoderTrainConfig:
    epochs: int = 1
    max_steps: int = 0  # stop after this many steps in all (0: run every epoch)
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    temperature: float = 2.0  # distill: softening of both distributions
    hidden_weight: float = 0.0  # distill: weight of the hidden-state MSE (0: off)
    vocab_size: int = 8000  # tokenizer pieces, when no init student brings a tokenizer
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 200
    eval_requests: int = 500  # held-out test requests scored at the end (0: all)


@dataclass
class Samples:
    """What one training step reads: pair indices and targets (logits or grades)."""

    query: np.ndarray
    title: np.ndarray
    target: torch.Tensor  # (n, 4) teacher logits or (n,) grades
    hidden: torch.Tensor | None = None


class EncoderRun:
    def __init__(
        self, kind: str, log_dir: str | Path, run_dir: str | Path,
        student: StudentConfig | None = None, train: EncoderTrainConfig | None = None,
        labels: str | Path | None = None, init: str | Path | None = None, resume: bool = False,
        stop_after: int | None = None, tokenizer: str | Path | None = None,
        pairs: PairsConfig | None = None,
    ):  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
        if kind == "distill" and labels is None:
            raise ValueError("distillation needs the teacher's labels (--labels)")
        self.kind, self.run_dir, self.stop_after = kind, Path(run_dir), stop_after
        self.train = train or EncoderTrainConfig()
        wanted = {
            "kind": kind, "log": str(log_dir), "labels": str(labels) if labels else None,
            "init": str(init) if init else None, "tokenizer": str(tokenizer) if tokenizer else None,
            "student": asdict(student or StudentConfig()),
            "train": asdict(self.train), **(pairs or PairsConfig()).settings(),
        }  # fmt: skip
        self.pairs = read_pairs(log_dir, pairs)  # a log that fails validation creates no run
        claim_run_dir(self.run_dir, "config.json", wanted, resume, "the settings differ")
        self.student, self.tokenizer = self._student(student or StudentConfig(), init, tokenizer)
        self.samples, self.unmatched = self._samples(labels)
        self.projection = None
        if self.train.hidden_weight > 0:
            if self.samples.hidden is None:
                raise ValueError(f"{labels}: hidden_weight > 0 needs a 'hidden' column")
            self.projection = nn.Linear(self.student.dim, self.samples.hidden.shape[1])
        c = self.student.config
        self.query_ids = torch.from_numpy(self.tokenizer.encode(self.pairs.queries, c.query_length))
        self.title_ids = torch.from_numpy(self.tokenizer.encode(self.pairs.titles, c.title_length))
        params = [*self.student.parameters()]
        if self.projection is not None:
            params += self.projection.parameters()
        self.optimizer = torch.optim.AdamW(params, self.train.lr,
                                           weight_decay=self.train.weight_decay)  # fmt: skip
        self.state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "seconds": 0.0, "pairs": 0}
        if resume and self.last_path.is_file():
            self._restore(load_checkpoint(self.last_path))

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def _student(self, config: StudentConfig, init: str | Path | None,
                 tokenizer_path: str | Path | None) -> tuple:  # fmt: skip
        if init is not None:
            return load_student(init)
        path = self.run_dir / "tokenizer.json"
        if tokenizer_path is not None:  # e.g. one tokenizer for runs that are compared
            tokenizer = TextTokenizer.load(tokenizer_path)
        elif path.is_file():  # a resumed run keeps the tokenizer it trained
            tokenizer = TextTokenizer.load(path)
        else:
            tokenizer = TextTokenizer.train(self.pairs.train_texts(), self.train.vocab_size)
            tokenizer.save(path)
        torch.manual_seed(self.train.seed)
        config = StudentConfig(**{**asdict(config), "vocab_size": tokenizer.vocab_size})
        return Student(config), tokenizer

    def _samples(self, labels: str | Path | None) -> tuple[Samples, int]:
        if self.kind == "distill":
            t = read_teacher_labels(labels, self.pairs)
            hidden = torch.from_numpy(t.hidden) if t.hidden is not None else None
            return Samples(t.query, t.title, torch.from_numpy(t.logits), hidden), t.unmatched
        rows = self.pairs.labelled
        if rows.num_rows == 0:
            raise ValueError("the log's training days hold no human grade to fine-tune on")
        grades = torch.from_numpy(rows["grade"].to_numpy().astype(np.int64))
        return Samples(rows["query"].to_numpy(), rows["title"].to_numpy(), grades), 0

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.student.load_state_dict(checkpoint["student"])
        if self.projection is not None:
            self.projection.load_state_dict(checkpoint["projection"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"])
        self.state = checkpoint["state"]

    def _checkpoint(self) -> None:
        save_checkpoint(self.last_path, {
            "student": self.student.state_dict(),
            "projection": self.projection.state_dict() if self.projection is not None else None,
            "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
            "state": dict(self.state),
        })  # fmt: skip

    def loss(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        s = self.samples
        q = self.query_ids[s.query[rows]]
        t = self.title_ids[s.title[rows]]
        state = self.student.pair_state(q, t)
        logits = self.student.head(state)
        if self.kind == "sft":
            ce = F.cross_entropy(logits, s.target[rows])
            return {"loss": ce, "loss_ce": ce}
        parts = {"loss_kl": distill_kl(logits, s.target[rows], self.train.temperature)}
        total = parts["loss_kl"]
        if self.projection is not None:
            parts["loss_hidden"] = hidden_mse(self.projection(state), s.hidden[rows])
            total = total + self.train.hidden_weight * parts["loss_hidden"]
        return {"loss": total, **parts}

    def _done(self) -> bool:
        t, s = self.train, self.state
        return s["epoch"] >= t.epochs or bool(t.max_steps and s["step"] >= t.max_steps)

    def fit(self) -> dict[str, Any]:
        t = self.train
        n = self.samples.query.size
        per_epoch = -(-n // t.batch_size)
        total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)
        bar = tqdm(total=total, initial=self.state["step"], desc=f"{self.kind}", unit="step",
                   disable=None)  # fmt: skip
        window: list[dict[str, float]] = []
        try:
            while not self._done():
                order = np.random.default_rng([t.seed, self.state["epoch"]]).permutation(n)
                self.student.train()
                for start in range(self.state["step_in_epoch"] * t.batch_size, n, t.batch_size):
                    if self._done():
                        break
                    window.append(self._step(order[start : start + t.batch_size]))
                    bar.update(1)
                    if self.state["step"] % t.log_every == 0:
                        self._log(window)
                        bar.set_postfix(loss=f"{window[-1]['loss']:.4f}")
                        window = []
                    if self.state["step"] % t.checkpoint_every == 0:
                        self._checkpoint()
                    if self.stop_after is not None and self.state["step"] >= self.stop_after:
                        raise StopTraining(f"stopped after step {self.state['step']}")
                else:
                    self.state["epoch"] += 1
                    self.state["step_in_epoch"] = 0
        finally:
            bar.close()
        self._checkpoint()
        return self._finish()

    def _step(self, rows: np.ndarray) -> dict[str, float]:
        started = time.perf_counter()
        losses = self.loss(rows)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(self.student.parameters(), self.train.clip_norm)
        self.optimizer.step()
        self.state["seconds"] += time.perf_counter() - started
        self.state["pairs"] += rows.size
        self.state["step"] += 1
        self.state["step_in_epoch"] += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def _log(self, window: list[dict[str, float]]) -> None:
        mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        entry = {"step": self.state["step"], "epoch": self.state["epoch"], **mean}
        with open(self.run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _finish(self) -> dict[str, Any]:
        s = self.state
        save_student(self.run_dir / "student", self.student, self.tokenizer,
                     {"kind": self.kind, "steps": s["step"]})  # fmt: skip
        result = {
            "kind": self.kind, "steps": s["step"], "epochs": s["epoch"],
            "samples": int(self.samples.query.size), "unmatched_labels": self.unmatched,
            "train_pairs_per_s": s["pairs"] / max(s["seconds"], 1e-9),
            "parameters": sum(p.numel() for p in self.student.parameters()),
            "mode": self.student.config.mode,
        }  # fmt: skip
        result["pairs"] = self.pairs.counts
        try:
            result["held_out"] = evaluate_held_out(  # the same pools whatever the seed
                self.student, self.tokenizer, self.pairs, self.train.eval_requests
            )
        except NothingToScore as err:
            result["held_out_skipped"] = str(err)
        with atomic_file(self.run_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        return result
