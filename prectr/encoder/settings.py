"""The student's shape and how it trains: the settings sections of ``prectr encoder distill``
and ``sft`` (saved with a student and in a run's ``config.json``), apart from the modules that
use them so that the command line reads their defaults without loading PyTorch."""

from __future__ import annotations

from typing import Literal, Self, get_args

from pydantic import Field, model_validator

from prectr.section import Section

Precision = Literal["auto", "bf16", "fp32"]
"""The student's training passes: float32, bfloat16 autocast, or bf16 where the processor
multiplies bfloat16 natively (:func:`prectr.modules.text.training_dtype`)."""
Mode = Literal["cross", "two_tower"]
MODES = get_args(Mode)


class StudentConfig(Section):
    """The student's shape (saved with it in ``student.pt``)."""

    vocab_size: int = Field(8000, ge=1)
    """Tokenizer pieces (a training run sets it to its tokenizer's)."""
    mode: Mode = "two_tower"
    """A cross encoder over the pair, or two towers (the default: see
    :mod:`prectr.encoder.student`)."""
    dim: int = Field(144, ge=1)
    """Width of the transformer; a multiple of ``heads``."""
    layers: int = Field(3, ge=1)
    """Transformer layers."""
    heads: int = Field(4, ge=1)
    """Attention heads."""
    ff: int = Field(576, ge=1)
    """Feed-forward width."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout rate."""
    query_length: int | None = Field(None, ge=1)
    """Pieces kept of a query; None: the limit the tokenizer chose on its training texts
    (:mod:`prectr.text.tokenizer`), set when the student is built."""
    title_length: int | None = Field(None, ge=1)
    """Pieces kept of a title; None as for ``query_length``."""
    piece_overlap: bool = True
    """Two-tower only: the interaction also reads the pair's piece overlap
    (:func:`prectr.encoder.student.piece_overlap`), the lexical match that two pooled towers
    blur. On by default for two towers, chosen on validation with three seeds on the `small`
    world and a real Chinese graded set (docs/fidelity.md, "``piece_overlap`` as the student's
    default"); off for the cross encoder unless asked for, which it refuses. A student saved
    before the option existed loads without it."""
    overlap_skip: bool = True
    """With ``piece_overlap``: the overlap's columns also reach the pair state through a
    linear map of their own, added to the interaction's output (zero at the start), so the
    grade head holds a logistic regression on them beside the towers' non-linear match: the
    wide part of a wide-and-deep model (Cheng et al., DLRS 2016). On by default wherever piece
    overlap is (two towers), chosen with ``select: macro_f1+spearman`` on validation with three
    seeds on two logs and checked end to end (docs/fidelity.md, "The student's default chosen
    again"); off for a student without piece overlap unless asked for, which it refuses. A
    student saved before the option existed loads without it."""

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> Self:
        if self.dim % self.heads:
            raise ValueError(f"student dim {self.dim} is not a multiple of heads {self.heads}")
        if self.piece_overlap and self.mode != "two_tower":
            if "piece_overlap" in self.model_fields_set:
                raise ValueError("piece_overlap is a two_tower option (the cross encoder "
                                 "attends across the pair itself)")  # fmt: skip
            self.__dict__["piece_overlap"] = False  # the default, for two towers only
        if self.overlap_skip and not self.piece_overlap:
            if "overlap_skip" in self.model_fields_set:
                raise ValueError("overlap_skip adds a linear path for piece overlap; the "
                                 "student reads none (piece_overlap is off)")  # fmt: skip
            self.__dict__["overlap_skip"] = False  # the default, with piece overlap only
        return self


# the student's options added after students were saved, and the value those students have
STUDENT_OPTIONS_BEFORE = {"piece_overlap": False, "overlap_skip": False}


def student_config(
    piece_overlap: bool | None = None, overlap_skip: bool | None = None, **settings
) -> StudentConfig:
    """The student's settings, ``piece_overlap`` and ``overlap_skip`` as asked, or their
    defaults when None (each on for two towers, off for the cross encoder): what
    ``--piece-overlap`` / ``--no-piece-overlap`` (and ``--overlap-skip`` /
    ``--no-overlap-skip``) or neither give. Only an asked value counts as asked
    (``model_fields_set``), which ``--init`` checks against the student it brings; a copy
    rebuilt from a dump (``updated``) carries the value it had as asked."""
    asked = {name: value for name, value in
             (("piece_overlap", piece_overlap), ("overlap_skip", overlap_skip))
             if value is not None}  # fmt: skip
    return StudentConfig(**settings, **asked)


# cross-entropy; class-weighted cross-entropy (each grade weighs n / (4 n_grade) on the training
# pairs); cross-entropy to soft ordinal labels (weight of grade k proportional to
# exp(-(k - y)^2), so a near miss costs less than a far one)
SftLoss = Literal["ce", "weighted", "ordinal"]
SFT_LOSSES = get_args(SftLoss)
# how often an sft epoch draws each distinct graded pair: once, or once per graded row of it (as
# often as the log shows and grades it; its merged grade either way)
PairWeight = Literal["pairs", "rows"]
PAIR_WEIGHTS = get_args(PairWeight)
# the validation figure sft's early stopping watches and its kept student maximises: macro-F1
# (every grade counts alike: a majority-grade student scores low) or Spearman (the order of the
# pairs by expected grade, what a ranker reads), or their sum (both, as the baseline is judged:
# the default)
Selection = Literal["macro_f1", "spearman", "macro_f1+spearman"]
SELECTIONS = get_args(Selection)


class EncoderTrainConfig(Section):
    """How the student trains (``distill`` and ``sft``; a run's ``config.json`` holds it)."""

    epochs: int = Field(1, ge=0)
    """Passes over the training pairs."""
    max_steps: int = Field(0, ge=0)
    """Stop after this many steps in all (0: run every epoch)."""
    batch_size: int = Field(256, ge=1)
    """Pairs per step, over all processes."""
    lr: float = Field(5e-4, ge=0)
    """Learning rate."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW's weight decay."""
    clip_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this global norm."""
    temperature: float = Field(2.0, gt=0)
    """distill: softening of both distributions."""
    hidden_weight: float = Field(0.0, ge=0)
    """distill: weight of the hidden-state MSE (0: off)."""
    vocab_size: int = Field(8000, ge=1)
    """Tokenizer pieces, when no init student brings a tokenizer."""
    seed: int = 0
    """Seed of the initialisation and of the order."""
    log_every: int = Field(50, ge=1)
    """Steps between train-log lines."""
    checkpoint_every: int = Field(200, ge=0)
    """Steps between checkpoints (0: at each epoch's end only)."""
    eval_requests: int = Field(500, ge=0)
    """Held-out test requests scored at the end (0: all)."""
    valid_share: float = Field(0.1, ge=0, lt=1)
    """sft: the graded pairs of this share of the training queries (by a hash of the query
    text) validate instead of training (0: no validation, no early stopping)."""
    valid_every: int = Field(50, ge=0)
    """sft: steps between validation scores, and one at the end (0: at each epoch's end)."""
    patience: int = Field(5, ge=0)
    """sft: validations without a better ``select`` figure before stopping (0: never)."""
    select: Selection = "macro_f1+spearman"
    """sft: the validation figure early stopping watches and the kept student maximises
    (:data:`SELECTIONS`). By default the sum of macro-F1 and Spearman, the two figures the
    student is judged on, chosen with ``overlap_skip`` (docs/fidelity.md, "The student's default
    chosen again"): macro-F1 alone kept late checkpoints whose order had worn off on a small
    real set (docs/fidelity.md, "Why the student orders QBQTC worse than string overlap"), and
    Spearman alone keeps the one that orders pairs best."""
    loss: SftLoss = "ce"
    """sft: the loss on the human grades (:data:`SFT_LOSSES`)."""
    pair_weight: PairWeight = "pairs"
    """sft: how often an epoch draws each graded pair (:data:`PAIR_WEIGHTS`; validation is
    weighted alike)."""
    ema_decay: float = Field(0.0, ge=0, lt=1)
    """An exponential moving average of the student's weights, updated after every step with
    this decay (0: off, the student as trained): what validation scores, the kept checkpoint
    holds and the run exports and scores on held-out pairs. Measured at 0.98 and 0.995 and not
    adopted (docs/fidelity.md, "A moving average of the student's weights")."""
    precision: Precision = "fp32"
    """The student's training passes: ``fp32``, ``bf16`` (bfloat16 autocast; weights,
    optimiser, losses, validation and scoring in float32) or ``auto`` (bf16 on a processor with
    native bfloat16 products, :func:`prectr.modules.text.training_dtype`)."""
