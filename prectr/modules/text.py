"""The text encoders the RSL module can read query and title through.

* ``bag``: :class:`prectr.modules.rsl.BagOfTokensEncoder`, mean-pooled word embeddings (the
  stand-in, no pre-training);
* ``student``: :class:`StudentText`, the distilled and fine-tuned transformer student
  (:mod:`prectr.encoder.student`) loaded from its directory, trained end to end at the trainer's
  ``lr_encoder`` (it is the submodule named ``text_encoder``) or ``frozen``; trained end to end,
  its training passes run in float32, or in bfloat16 autocast with ``precision`` ``bf16``, or
  ``auto`` where the processor multiplies bfloat16 natively (see :func:`training_dtype`); with
  ``frozen_layers`` its lowest layers fixed, with ``reuse_steps`` each text's state reused for
  a few training passes (:meth:`prectr.encoder.student.Student.reuse_states`);
* ``cache``: :class:`CachedText`, a frozen encoder's embeddings (PRECTR's MiniLM) read from an
  embedding cache (:mod:`prectr.text.cache`), never recomputed.

Each returns one vector per candidate, with the match numerics the features carry (share of query
tokens in the title, category match) appended, and says its width in ``out_dim``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from prectr.data import groups as g
from prectr.data.dataset import Batch
from prectr.data.features import Sequence
from prectr.data.groups import Role, require
from prectr.encoder.settings import Precision
from prectr.modules.rsl import GRADES, BagOfTokensEncoder, match_columns


def _sequence(batch: Batch, name: str) -> torch.Tensor:
    """A request- or item-level sequence expanded to every row (serving sends one request row)."""
    return batch.sequences[name].expand(batch.numeric.shape[0], -1)


def _inputs(specs: list, encoder: type) -> list[str]:
    """The names of the query and title features (its ``ROLES``) a text encoder reads."""
    return [s.name for s in require(specs, encoder.ROLES, encoder.__name__)]


class StudentText(nn.Module):
    """The student's pair state and its fine-tuned grade logits for each candidate (each
    distinct query, title or pair of the batch encoded once, see
    :meth:`prectr.encoder.student.Student.pair_state`)."""

    ROLES = (g.QUERY_PIECES, g.TITLE_PIECES)

    def __init__(self, specs: list, vocab_sizes: dict[str, int], student: str, frozen: bool,
                 precision: Precision = "fp32", frozen_layers: int = 0,
                 reuse_steps: int = 0):  # fmt: skip
        super().__init__()
        from prectr.encoder.student import load_student

        self.inputs = _inputs(specs, StudentText)
        self.text_encoder, _ = load_student(student)
        c = self.text_encoder.config
        if vocab_sizes.get("piece") != c.vocab_size:
            raise ValueError(f"{student}: the student has {c.vocab_size} pieces, the features' "
                             f"tokenizer {vocab_sizes.get('piece')}; features.student must name "
                             "the same student")  # fmt: skip
        lengths = {s.name: s.length for s in specs if isinstance(s, Sequence)}
        query, title = (lengths[name] for name in self.inputs)
        if query > c.query_length or title > c.title_length:
            raise ValueError(f"features.query_pieces / title_pieces exceed the student's "
                             f"{c.query_length} / {c.title_length}")  # fmt: skip
        self.frozen, self.precision = frozen, precision
        self.text_encoder.requires_grad_(not frozen)
        self.text_encoder.freeze_lower(frozen_layers)
        if frozen and reuse_steps:
            raise ValueError("student_reuse_steps needs a student trained end to end; "
                             "frozen_encoder is true (a frozen student never runs a training "
                             "pass, so it would reuse nothing)")  # fmt: skip
        self.text_encoder.reuse_states(reuse_steps)
        self.match_columns = match_columns(specs)
        self.out_dim = c.dim + GRADES + len(self.match_columns)

    def train(self, mode: bool = True) -> StudentText:
        super().train(mode)
        if self.frozen:  # a frozen student keeps its inference behaviour (no dropout)
            self.text_encoder.eval()
        return self

    def forward(self, batch: Batch) -> torch.Tensor:
        queries, titles = (_sequence(batch, name) for name in self.inputs)
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen),
            training_autocast(self.precision, queries.device, self.training and not self.frozen),
        ):
            state = self.text_encoder.pair_state(queries, titles)
            grades = self.text_encoder.head(state)
        numeric = batch.numeric[:, self.match_columns]
        return torch.cat([state.to(numeric.dtype), grades.to(numeric.dtype), numeric], 1)


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the student trains end to end in (``model_params.encoder_precision``):
    ``bf16`` (bfloat16 autocast, float32 weights and optimiser), ``fp32``, or ``auto``: bfloat16
    on a processor with native bfloat16 products (AVX512-BF16 or AMX), where on an AMX machine
    it halves the student's step when every text is encoded each step but gains only 1.05x with
    reused states (BENCHMARKS.md, "Student training throughput"), else float32 (emulated
    bfloat16 is slower; GPUs are not measured). On an AMD EPYC with AVX512-BF16 and no AMX the
    student's own distillation and SFT ran slower in bfloat16, 0.87x and 0.95x (docs/fidelity.md,
    "The demo's student distilled and fine-tuned in bfloat16"). Scoring and evaluation stay in
    float32."""
    if precision == "auto":
        native = device.type == "cpu" and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def training_autocast(precision: str, device: torch.device, training: bool) -> torch.autocast:
    """The autocast of a student's pass: in :func:`training_dtype` while it trains, off when
    that dtype is float32 or the pass does not train (scoring stays float32)."""
    dtype = training_dtype(precision, device)
    return torch.autocast(device.type, dtype, enabled=training and dtype != torch.float32)


class CachedText(nn.Module):
    """``[q, t, q * t, |q - t|]`` of a frozen encoder's cached query and title embeddings."""

    ROLES = (g.QUERY_EMBEDDING, g.TITLE_EMBEDDING)

    def __init__(self, specs: list, vocab_sizes: dict[str, int], text_cache: str):
        super().__init__()
        from prectr.text.cache import load_embedding_cache

        self.inputs = _inputs(specs, CachedText)
        texts, vectors = load_embedding_cache(text_cache)
        if vocab_sizes.get("text") != len(texts) + 2:
            raise ValueError(f"{text_cache}: {len(texts)} cached texts, the features know "
                             f"{vocab_sizes.get('text', 2) - 2}; features.text_cache must name "
                             "the same cache")  # fmt: skip
        table = np.concatenate([np.zeros((2, vectors.shape[1]), np.float32), vectors])
        # a buffer left out of the state dict: checkpoints stay small, the cache is the source
        self.register_buffer("table", torch.from_numpy(table), persistent=False)
        self.match_columns = match_columns(specs)
        self.out_dim = 4 * vectors.shape[1] + len(self.match_columns)

    def forward(self, batch: Batch) -> torch.Tensor:
        q, t = (self.table[_sequence(batch, name)[:, 0]] for name in self.inputs)
        return torch.cat([q, t, q * t, (q - t).abs(), batch.numeric[:, self.match_columns]], 1)


TextEncoder = Literal["bag", "student", "cache"]  # the keys of ENCODERS
ENCODERS: dict[str, type[nn.Module]] = {
    "bag": BagOfTokensEncoder, "student": StudentText, "cache": CachedText,
}  # fmt: skip


def text_roles(kind: str) -> dict[str, tuple[Role, ...]]:
    """The features the ``kind`` of text encoder reads, under its class's name."""
    if kind not in ENCODERS:
        raise ValueError(f"text_encoder {kind!r}: expected one of {tuple(ENCODERS)}")
    return {ENCODERS[kind].__name__: ENCODERS[kind].ROLES}


def build_text_encoder(
    kind: str, specs: list, vocab_sizes: dict[str, int], dim: int, student: str | None = None,
    frozen: bool = False, text_cache: str | None = None, precision: Precision = "fp32",
    frozen_layers: int = 0, reuse_steps: int = 0,
) -> nn.Module:  # fmt: skip
    """The ``kind`` of text encoder (see the module docstring), with its ``out_dim``."""
    text_roles(kind)  # an unknown kind is refused by name
    for name, value in (("student_frozen_layers", frozen_layers),
                        ("student_reuse_steps", reuse_steps)):  # fmt: skip
        if value and kind != "student":
            raise ValueError(f"{name} is the student's; text_encoder is {kind}")
    if kind == "student":
        if not student:
            raise ValueError("text_encoder student needs model_params.student (its directory)")
        return StudentText(specs, vocab_sizes, student, frozen, precision, frozen_layers,
                           reuse_steps)  # fmt: skip
    if kind == "cache":
        if not text_cache:
            raise ValueError("text_encoder cache needs model_params.text_cache (its file)")
        return CachedText(specs, vocab_sizes, text_cache)
    return BagOfTokensEncoder(specs, vocab_sizes, dim)
