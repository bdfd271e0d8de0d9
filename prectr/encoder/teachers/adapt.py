"""Adapting a frozen teacher to the observed human grades: a head trained on its hidden states.

The head (an MLP, or a linear softmax layer with ``hidden=0``) sees the standardised hidden
state and predicts the grade with cross-entropy; training runs on the training engine
(:class:`prectr.train.engine.Engine`), stops early on the cross-entropy (``logloss``) of a
validation share of the labelled queries and keeps the best epoch. In a run directory
(``prectr teacher adapt`` keeps one beside the teacher, ``OUT.run``) the engine writes the train
log, TensorBoard scalars and ``best``/``last`` checkpoints at each epoch's end, so a killed
adaptation resumes and ends with the same head; without one (a library call) it trains in
memory. Under ``torchrun`` each process trains on its share of every batch and the engine
averages the gradients. The adapted teacher is the frozen base teacher followed by this head; it
is saved as a directory (``teacher.json`` + ``head.pt``), atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch import nn

from prectr.encoder.pairs import VALIDATION_SPLIT, validation_queries
from prectr.encoder.teachers.base import N_GRADES, Teacher
from prectr.encoder.teachers.llm import Int8Linear
from prectr.io import atomic_dir, claim_run_dir
from prectr.section import Section
from prectr.train.distributed import join
from prectr.train.engine import Engine
from prectr.train.stages import Stage, Stopping, shuffled_steps
from prectr.words import count

HEAD_FILE, ADAPTED_FILE = "head.pt", "teacher.json"


class HeadConfig(Section):
    """How the grade head is shaped and trained (saved with the adapted teacher)."""

    model_config = ConfigDict(frozen=True)

    hidden: int = Field(256, ge=0)
    """Width of the head's hidden layer; 0 gives a linear (multinomial logistic) head."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout before the output layer."""
    lr: float = Field(1e-3, ge=0)
    """AdamW's learning rate."""
    weight_decay: float = Field(1e-2, ge=0)
    """AdamW's weight decay."""
    batch_size: int = Field(256, ge=1)
    """Pairs per step, over all processes."""
    max_epochs: int = Field(300, ge=1)
    """Epochs at the most."""
    patience: int = Field(15, ge=0)
    """Epochs without a lower validation cross-entropy before stopping (0: never stop
    early)."""
    valid_share: float = Field(0.15, gt=0, lt=1)
    """Share of the labelled queries whose pairs validate: the top of the query hash range
    (:func:`prectr.encoder.pairs.validation_queries`), so at a share at least the student's
    SFT ``valid_share`` (0.1 by default) the head never trains on the student's validation
    pairs."""
    seed: int = 0
    """Seed of the head's start and of the batches' order."""


class GradeHead(nn.Module):
    """Standardise the hidden state, then an MLP (or a linear layer) to four grade logits."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, N_GRADES)
            )
        else:
            self.net = nn.Sequential(nn.Linear(dim, N_GRADES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale)


def train_head(
    hidden: np.ndarray, grades: np.ndarray, groups: Sequence[str],
    config: HeadConfig = HeadConfig(), run_dir: str | Path | None = None, resume: bool = False,
    overwrite: bool = False, stop_after: int | None = None,
) -> tuple[GradeHead, dict[str, Any]]:  # fmt: skip
    """Fit a head on (hidden state, human grade) pairs; ``groups`` (the query texts) decide
    the train/validation split (:func:`prectr.encoder.pairs.validation_queries`). Returns the
    head at its best validation loss and a summary of the fit.

    ``run_dir`` (``None``: in memory) records the settings (``config.json``: the head's config
    and a digest of the pairs), so ``resume`` refuses a run of other settings or data;
    ``overwrite`` replaces a run there; ``stop_after`` imitates a kill at that step."""
    hidden = np.asarray(hidden, dtype=np.float32)
    grades = np.asarray(grades)
    if hidden.ndim != 2 or grades.shape != (hidden.shape[0],) or len(groups) != len(grades):
        raise ValueError(
            f"hidden {hidden.shape}, grades {grades.shape}, {count(len(groups), 'group')}"
        )
    if not np.isin(grades, np.arange(N_GRADES)).all():
        raise ValueError("grades must be 0, 1, 2 or 3")
    valid = validation_queries(groups, config.valid_share)
    if valid.all() or not valid.any():
        raise ValueError(f"too few labelled queries to hold some out for validation "
                         f"({count(len(set(groups)), 'query', 'queries')}, valid_share "
                         f"{config.valid_share}): pass more queries or pairs")  # fmt: skip
    processes = join()
    if run_dir is not None:
        digest = hashlib.sha256(hidden.tobytes() + grades.astype(np.int64).tobytes()
                                + "\n".join(groups).encode()).hexdigest()[:16]  # fmt: skip
        wanted = {"head_config": config.model_dump(), "pairs": int(grades.size), "digest": digest,
                  "validation": VALIDATION_SPLIT}  # fmt: skip
        processes.on_main(lambda: claim_run_dir(Path(run_dir), "config.json", wanted, resume,
                                                "the settings differ", overwrite))  # fmt: skip
    torch.manual_seed(config.seed + processes.rank)  # the main process's head is trained
    head = GradeHead(hidden.shape[1], config.hidden, config.dropout)
    x, y = torch.from_numpy(hidden), torch.from_numpy(grades.astype(np.int64))
    train_x, train_y, valid_x, valid_y = x[~valid], y[~valid], x[valid], y[valid]
    head.mean.copy_(train_x.mean(0))
    head.scale.copy_(train_x.std(0).clamp(min=1e-6))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    def loss(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": loss_fn(head(train_x[rows]), train_y[rows])}

    @torch.no_grad()
    def validate() -> dict[str, float]:
        head.eval()
        return {"logloss": float(loss_fn(head(valid_x), valid_y))}

    engine = Engine({"head": head}, optimizer, directory=run_dir,
                    stopping=Stopping("logloss", config.patience), tensorboard=True,
                    stop_after=stop_after, processes=processes)  # fmt: skip
    steps = shuffled_steps(np.arange(len(train_y)), config.batch_size, config.seed, processes)
    per_epoch = -(-len(train_y) // config.batch_size)
    engine.fit(Stage("train", config.max_epochs, steps, loss, validate,
                     steps_per_epoch=per_epoch), resume)  # fmt: skip
    engine.load_best()
    best = engine.state["best"]
    head.eval()
    with torch.no_grad():
        accuracy = float((head(valid_x).argmax(1) == valid_y).float().mean())
    summary = {
        "train_pairs": int((~valid).sum()),
        "valid_pairs": int(valid.sum()),
        "valid_cross_entropy": best["logloss"],
        "valid_accuracy": accuracy,
        "best_epoch": best["epoch"],
    }
    return head, summary


class AdaptedTeacher(Teacher):
    """A frozen base teacher whose grade logits come from a trained head on its hidden states."""

    def __init__(self, base: Teacher, base_spec: str, head: GradeHead, info: dict[str, Any]):
        self.base = base
        self.base_spec = base_spec
        self.head = head.eval()
        self.info = info
        self.name = f"adapted:{base.name}"
        self.hidden_size = base.hidden_size
        self.dtype = base.dtype

    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        hidden = self.base.hidden(queries, titles)  # the base's own grade logits are not needed
        return self.adapt(hidden), hidden

    @torch.no_grad()
    def adapt(self, hidden: np.ndarray) -> np.ndarray:
        """Adapted grade logits from the base teacher's hidden states."""
        return self.head(torch.from_numpy(np.asarray(hidden, dtype=np.float32))).numpy()

    def fingerprint(self) -> dict[str, Any]:
        state = b"".join(v.numpy().tobytes() for v in self.head.state_dict().values())
        head = hashlib.sha256(state).hexdigest()[:16]
        return {"kind": "adapted", "base": self.base.fingerprint(), "head": head}

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            torch.save(self.head.state_dict(), tmp / HEAD_FILE)
            meta = {"base": self.base_spec, "hidden_size": self.hidden_size, **self.info}
            (tmp / ADAPTED_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return Path(out)

    @classmethod
    def load(cls, path: str | Path, load_base: Callable[[str, str], Teacher]) -> AdaptedTeacher:
        """The adapted teacher saved in ``path``, over the base teacher ``load_base(spec,
        dtype)`` gives for the spec and dtype it was saved with
        (:func:`prectr.encoder.teachers.load.load_teacher`)."""
        path = Path(path)
        try:
            meta = json.loads((path / ADAPTED_FILE).read_text())
            config = HeadConfig(**meta["head_config"])
            base_spec, dim = meta["base"], int(meta["hidden_size"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path / ADAPTED_FILE}: not an adapted teacher ({err})") from err
        head = GradeHead(dim, config.hidden, config.dropout)
        head.load_state_dict(torch.load(path / HEAD_FILE, weights_only=True))
        if meta.get("dtype") == "int8" and meta.get("int8") != Int8Linear.SCHEME:
            raise ValueError(f"{path}: its head was fitted on int8 states of another scheme "
                             f"({meta.get('int8', 'one scale per layer input')}) than today's "
                             f"({Int8Linear.SCHEME}): adapt the teacher again")  # fmt: skip
        base = load_base(base_spec, meta.get("dtype", "float32"))
        if base.hidden_size != dim:
            raise ValueError(
                f"{path}: head expects {dim}-d hidden states, teacher {base_spec} gives "
                f"{base.hidden_size}"
            )
        return cls(base, base_spec, head, meta)


def base_spec(spec: str | Path) -> str:
    """How an adapted teacher names its base: built-in names and absolute paths (joined by +)."""
    if "+" in str(spec) and not Path(spec).exists():
        return "+".join(base_spec(part) for part in str(spec).split("+"))
    return str(spec) if str(spec) in ("smollm2", "minilm") else str(Path(spec).resolve())


def adapt_teacher(
    base: Teacher,
    spec: str | Path,
    hidden: np.ndarray,
    grades: np.ndarray,
    queries: Sequence[str],
    config: HeadConfig = HeadConfig(),
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> AdaptedTeacher:
    """Train a head for ``base`` on its hidden states of human-labelled pairs (in ``run_dir``,
    or in memory: :func:`train_head`)."""
    if hidden.shape[1] != base.hidden_size:
        raise ValueError(
            f"hidden states are {hidden.shape[1]}-d, {base.name} gives {base.hidden_size}"
        )
    head, summary = train_head(hidden, grades, queries, config, run_dir, resume, overwrite)
    info = {
        "head_config": config.model_dump(),
        "fit": summary,
        "dtype": base.dtype or "float32",
    }
    if base.dtype == "int8":  # the states' scheme, which a reload must match
        info["int8"] = Int8Linear.SCHEME
    return AdaptedTeacher(base, base_spec(spec), head, info)
