"""Training the student: distillation from a teacher's labels, then fine-tuning on human grades.

``distill``: on every training pair the teacher labelled (labelled by humans or not), the KL
divergence to the teacher's grade distribution at a temperature, plus, with ``hidden_weight``,
the MSE between a linear projection of the student's pooled state and the teacher's hidden
state, standardised per dimension over the labelled pairs
(:func:`prectr.losses.distill.standardise_states`; the projection is trained along and dropped
afterwards). ``sft``: a loss on the human grades of the training days (``loss``:
cross-entropy, class-weighted cross-entropy or cross-entropy to soft ordinal labels,
:data:`~prectr.encoder.settings.SFT_LOSSES`; ``pair_weight``: each distinct graded pair drawn
once an epoch, or once per graded row of it, :data:`~prectr.encoder.settings.PAIR_WEIGHTS`,
the share of each grade among the draws reported as ``train_grades``), starting from a
distilled student (``init``) or from scratch (the ablation that shows what distillation is
worth). SFT validates
on the graded pairs of a hashed ``valid_share`` of the training queries (kept out of its
training; the top of the hash range, :func:`prectr.encoder.pairs.validation_queries`, the
queries a teacher adapted at the same or a larger share validated on too): every
``valid_every`` steps and at the end it scores accuracy, macro-F1, each grade's recall and
Spearman (:func:`prectr.encoder.evaluate.grade_metrics`, as the held-out pairs are scored),
keeps the student of the best ``select`` figure so far as ``checkpoints/best.pt``, stops after
``patience`` scores without a better one, and exports the best student. The figure is by
default the sum of macro-F1 and Spearman (validation logs the sum): macro-F1 because a student
that predicts the majority grade scores high accuracy and a low macro-F1, Spearman because a
ranker reads the student's order; ``select: macro_f1`` or ``spearman`` keeps the best of one.
Distillation and SFT run on the training engine (:class:`prectr.train.engine.Engine`), under
``torchrun`` in several processes too: every process reads the pairs, each trains on its share
of every batch (the batch size is over all processes), the engine averages the gradients, and
the main process trains the tokenizer and writes every file. With ``ema_decay`` (either kind),
an exponential moving average of the student's weights, updated after every step
(:class:`torch.optim.swa_utils.AveragedModel`), is the student that validation scores, the
checkpoints keep and the run exports.

A run directory holds ``config.json``, ``tokenizer.json`` (trained on the log's training-day
queries and titles unless ``init`` or ``tokenizer`` brings one; the same texts give the same
tokenizer), ``train_log.jsonl`` (the mean losses every
``log_every`` steps, split ``train``, and each validation's scores, split ``valid``) with its
TensorBoard scalars in ``tb/``, ``checkpoints/last.pt`` (student, projection, weight average,
optimizer, RNG, steps into the epoch: a killed run resumes at the same step and ends with the
same weights), the exported ``student/`` directory and ``metrics.json``
with the held-out evaluation (:mod:`prectr.encoder.evaluate`) and the share of the training
days' distinct queries and titles that the student's piece limits truncate. A new student keeps
the piece limits its tokenizer chose (:mod:`prectr.text.tokenizer`) unless the student
configuration sets them; a tokenizer saved before limits existed has them chosen on the log's
training days. The metrics also hold the pair counts of :func:`prectr.encoder.pairs.read_pairs`, and
``held_out_skipped`` says why when no held-out row is graded. Every write is atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from prectr.encoder.evaluate import (
    NothingToScore,
    evaluate_held_out,
    grade_metrics,
    grade_probabilities,
)
from prectr.encoder.pairs import (
    GRADES,
    PairsConfig,
    read_pairs,
    read_teacher_labels,
    validation_queries,
)
from prectr.encoder.settings import STUDENT_OPTIONS_BEFORE, EncoderTrainConfig
from prectr.encoder.student import Student, StudentConfig, load_student, save_student
from prectr.io import atomic_file, claim_run_dir
from prectr.losses.distill import distill_kl, hidden_mse, standardise_states
from prectr.modules.text import training_autocast
from prectr.section import Section
from prectr.text.student_files import saved_student
from prectr.text.tokenizer import TextTokenizer
from prectr.train.distributed import join
from prectr.train.engine import Engine
from prectr.train.stages import Stage, Stopping, shuffled_steps

KINDS = ("distill", "sft")


@dataclass
class Samples:
    """What one training step reads: pair indices and targets (logits or grades)."""

    query: np.ndarray
    title: np.ndarray
    target: torch.Tensor  # (n, 4) teacher logits or (n,) grades
    hidden: torch.Tensor | None = None
    draws: np.ndarray | None = None  # sft: times an epoch draws each pair (None: once)

    def epoch_rows(self) -> np.ndarray:
        """The sample indices of one epoch, before shuffling: each pair ``draws`` times."""
        n = self.query.size
        return np.arange(n) if self.draws is None else np.repeat(np.arange(n), self.draws)

    def subset(self, keep: np.ndarray) -> Samples:
        """The samples where the boolean ``keep`` is set."""
        return Samples(self.query[keep], self.title[keep], self.target[torch.from_numpy(keep)],
                       None if self.hidden is None else self.hidden[torch.from_numpy(keep)],
                       None if self.draws is None else self.draws[keep])  # fmt: skip


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
        self.kind, self.run_dir = kind, Path(run_dir)
        self.train = train or EncoderTrainConfig()
        wanted = {
            "kind": kind, "log": str(log_dir), "labels": str(labels) if labels else None,
            "init": str(init) if init else None, "tokenizer": str(tokenizer) if tokenizer else None,
            "student": _recorded(student or StudentConfig()),
            "train": _recorded(self.train), **(pairs or PairsConfig()).settings(),
        }  # fmt: skip
        self.pairs = read_pairs(log_dir, pairs)  # a log that fails validation creates no run
        if init is not None and student is not None:  # checked before the run is claimed
            _check_asked_overlap(student, init)
        self.processes = join()
        self.processes.on_main(lambda: claim_run_dir(self.run_dir, "config.json", wanted, resume,
                                                     "the settings differ"))  # fmt: skip
        self.student, self.tokenizer = self._student(student or StudentConfig(), init, tokenizer)
        if self.processes.rank:  # its own dropout masks (the weights are the main process's)
            torch.manual_seed(self.train.seed + self.processes.rank)
        self.samples, self.unmatched = self._samples(labels)
        self.valid: Samples | None = None  # sft: validation pairs, split off the training ones
        self.class_weight: torch.Tensor | None = None  # sft: the "weighted" loss's weights
        if kind == "sft":
            self._split_validation()
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
        modules = {"student": self.student}
        if self.projection is not None:
            modules["projection"] = self.projection
        self.average: AveragedModel | None = None  # ema_decay: the student's weight average
        if self.train.ema_decay > 0:
            self.average = AveragedModel(
                self.student,
                use_buffers=True,
                multi_avg_fn=get_ema_multi_avg_fn(self.train.ema_decay),
            )
            modules["average"] = self.average.requires_grad_(False)
        t = self.train
        self.engine = Engine(
            modules, self.optimizer, directory=self.run_dir, clip_norm=t.clip_norm,
            stopping=Stopping(t.select, t.patience), log_every=t.log_every,
            checkpoint_every=t.checkpoint_every, tensorboard=True, stop_after=stop_after,
            processes=self.processes,
        )  # fmt: skip
        epoch_rows = self.samples.epoch_rows()
        steps = shuffled_steps(epoch_rows, t.batch_size, t.seed, self.processes)
        self.stage = Stage(
            "train", t.epochs, steps, self.loss,
            validate=self._validate if self.valid is not None else None,
            validate_every=t.valid_every, max_steps=t.max_steps,
            steps_per_epoch=-(-epoch_rows.size // t.batch_size),
            after_step=self._average_step if self.average is not None else None,
        )  # fmt: skip
        if resume:
            self.engine.resume()

    @property
    def kept(self) -> Student:
        """The student that validation scores and the run exports: the weight average with
        ``ema_decay``, else the student as trained."""
        return self.student if self.average is None else self.average.module

    def _average_step(self) -> None:
        """Fold the student's weights after a step into the average."""
        self.average.update_parameters(self.student)

    @property
    def state(self) -> dict[str, Any]:
        """The engine's state: steps, epochs, the best validation, ..."""
        return self.engine.state

    def _student(self, config: StudentConfig, init: str | Path | None,
                 tokenizer_path: str | Path | None) -> tuple:  # fmt: skip
        if init is not None:
            return load_student(init)
        path = self.run_dir / "tokenizer.json"
        if tokenizer_path is None:  # else e.g. one tokenizer for runs that are compared
            self.processes.on_main(lambda: self._train_tokenizer(path))
        tokenizer = TextTokenizer.load(tokenizer_path or path)
        if tokenizer.query_length is None:  # saved before tokenizers chose limits
            tokenizer.choose_limits(*self.pairs.train_texts())
        torch.manual_seed(self.train.seed)
        config = config.updated(
            vocab_size=tokenizer.vocab_size,
            query_length=config.query_length or tokenizer.query_length,
            title_length=config.title_length or tokenizer.title_length,
        )  # fmt: skip
        return Student(config), tokenizer

    def _train_tokenizer(self, path: Path) -> None:
        """Train the run's tokenizer on the training days' texts and save it to ``path``,
        unless a resumed run has it there already."""
        if not path.is_file():
            tokenizer = TextTokenizer.train(*self.pairs.train_texts(), self.train.vocab_size)
            tokenizer.save(path)

    def _samples(self, labels: str | Path | None) -> tuple[Samples, int]:
        if self.kind == "distill":
            t = read_teacher_labels(labels, self.pairs)
            hidden = None if t.hidden is None else torch.from_numpy(standardise_states(t.hidden))
            return Samples(t.query, t.title, torch.from_numpy(t.logits), hidden), t.unmatched
        rows = self.pairs.labelled
        if rows.num_rows == 0:
            raise ValueError("the log's training days hold no human grade to fine-tune on")
        grades = torch.from_numpy(rows["grade"].to_numpy().astype(np.int64))
        draws = rows["rows"].to_numpy() if self.train.pair_weight == "rows" else None
        return Samples(rows["query"].to_numpy(), rows["title"].to_numpy(), grades,
                       draws=draws), 0  # fmt: skip

    def _split_validation(self) -> None:
        """Move the graded pairs of a hashed ``valid_share`` of the queries to ``self.valid``
        and set the class weights from the grades that remain."""
        s, share = self.samples, self.train.valid_share
        if share > 0:
            held = validation_queries(self.pairs.queries, share)[s.query]
            if held.all() or not held.any():
                raise ValueError(f"valid_share {share}: the {np.unique(s.query).size} graded "
                                 "training queries leave no training or no validation pair; "
                                 "change valid_share or set it to 0")  # fmt: skip
            self.valid, self.samples = s.subset(held), s.subset(~held)
            if "spearman" in self.train.select and torch.unique(self.valid.target).numel() < 2:
                raise ValueError(f"select {self.train.select}: every validation pair has one "
                                 "grade, so no Spearman can be scored; select on macro_f1, or "
                                 "change valid_share")  # fmt: skip
        counts = torch.bincount(self.samples.target[self.samples.epoch_rows()],
                                minlength=GRADES).to(torch.float32)  # fmt: skip
        self.class_weight = counts.sum() / (GRADES * counts.clamp(min=1))

    def loss(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        s = self.samples
        q = self.query_ids[s.query[rows]]
        t = self.title_ids[s.title[rows]]
        with training_autocast(self.train.precision, q.device, training=True):
            state = self.student.pair_state(q, t)
            logits = self.student.head(state)
        state, logits = state.float(), logits.float()
        if self.kind == "sft":
            return {"loss": self._sft_loss(logits, s.target[rows])}
        parts = {"loss_kl": distill_kl(logits, s.target[rows], self.train.temperature)}
        total = parts["loss_kl"]
        if self.projection is not None:
            parts["loss_hidden"] = hidden_mse(self.projection(state), s.hidden[rows])
            total = total + self.train.hidden_weight * parts["loss_hidden"]
        return {"loss": total, **parts}

    def _sft_loss(self, logits: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
        if self.train.loss == "weighted":
            return F.cross_entropy(logits, grades, weight=self.class_weight)
        if self.train.loss == "ordinal":
            distance = torch.arange(GRADES, dtype=logits.dtype) - grades.unsqueeze(1)
            soft = torch.softmax(-(distance**2), 1)
            return -(soft * F.log_softmax(logits, 1)).sum(1).mean()
        return F.cross_entropy(logits, grades)

    def _validate(self) -> dict[str, float]:
        """Grade metrics of the validation pairs, weighted as training draws them."""
        v = self.valid
        probabilities = grade_probabilities(self.kept, self.tokenizer, self.pairs.queries,
                                            self.pairs.titles, v.query, v.title)  # fmt: skip
        rows = v.epoch_rows()
        metrics = grade_metrics(probabilities[rows], v.target.numpy()[rows])
        return {**metrics, "macro_f1+spearman": metrics["macro_f1"] + metrics["spearman"]}

    def fit(self) -> dict[str, Any]:
        """Train, then (in the main process) export the student and write and return the
        metrics; the other processes return nothing. A process group joined here is left."""
        self.engine.fit(self.stage)
        return self._finish() if self.processes.main else {}

    def _finish(self) -> dict[str, Any]:
        s, c = self.state, self.student.config
        queries, titles = self.pairs.train_texts()
        if self.valid is not None:  # export the student of the best validation score
            self.engine.load_best()
        save_student(self.run_dir / "student", self.kept, self.tokenizer,
                     {"kind": self.kind, "steps": s["step"]})  # fmt: skip
        result = {
            "kind": self.kind, "steps": s["step"], "epochs": self.engine.epochs("train"),
            "samples": int(self.samples.query.size), "unmatched_labels": self.unmatched,
            "train_pairs_per_s": s["samples"].get("train", 0)
            / max(s["seconds"].get("train", 0.0), 1e-9),
            "parameters": sum(p.numel() for p in self.student.parameters()),
            "mode": c.mode, "query_length": c.query_length, "title_length": c.title_length,
            "truncated": {  # shares of the training days' distinct texts cut at the limits
                "query": self.tokenizer.truncated_share(queries, c.query_length),
                "title": self.tokenizer.truncated_share(titles, c.title_length),
            },
        }  # fmt: skip
        if self.kind == "sft":  # validation: the exported (best) student's scores
            grades = self.samples.target[self.samples.epoch_rows()]
            shares = torch.bincount(grades, minlength=GRADES) / max(grades.numel(), 1)
            result.update(loss=self.train.loss, pair_weight=self.train.pair_weight,
                          select=self.train.select, rows_per_epoch=int(grades.numel()),
                          train_grades=[round(float(x), 4) for x in shares],
                          validation=s["best"],
                          stopped_early=self.engine.stopped_early(self.stage))  # fmt: skip
        result["pairs"] = self.pairs.counts
        try:
            result["held_out"] = evaluate_held_out(  # the same pools whatever the seed
                self.kept, self.tokenizer, self.pairs, self.train.eval_requests
            )
        except NothingToScore as err:
            result["held_out_skipped"] = str(err)
        with atomic_file(self.run_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        return result


# settings added after runs were recorded, and the value those runs had without them
BEFORE_THEY_EXISTED = {**STUDENT_OPTIONS_BEFORE, "select": "macro_f1", "ema_decay": 0.0}


def _recorded(settings: Section) -> dict[str, Any]:
    """Settings as a run records them: one added later is left out at the value runs had
    before it existed (:data:`BEFORE_THEY_EXISTED`), so that those runs resume (an older
    student's with ``--no-piece-overlap``, since piece overlap is on by default now)."""
    return {name: value for name, value in settings.model_dump().items()
            if name not in BEFORE_THEY_EXISTED or value != BEFORE_THEY_EXISTED[name]}  # fmt: skip


def _check_asked_overlap(student: StudentConfig, init: str | Path) -> None:
    """``--init`` brings its own shape: a ``piece_overlap`` or ``overlap_skip`` asked for (on or
    off, not left to the default) must be the one of the student in ``init`` (one saved before
    an option existed was built without it)."""
    built = saved_student(init)["config"]
    for name, before in STUDENT_OPTIONS_BEFORE.items():
        if name not in student.model_fields_set:
            continue
        brought = bool(built.get(name, before))
        if getattr(student, name) != brought:
            asked = "asked for" if getattr(student, name) else "turned off"
            was = "with" if brought else "without"
            raise ValueError(f"{name} {asked}, but the student in {init} was built {was} it "
                             "(--init brings its own shape): distil with the same setting, or "
                             "leave it out")  # fmt: skip
