"""Two-model fusion: a relevance classifier and a CTR model, multiplied at scoring time."""

from __future__ import annotations

from typing import Any

import torch

from prectr.data.dataset import Batch
from prectr.data.groups import Role, in_group
from prectr.losses.consistency import grade_cross_entropy
from prectr.models.baselines.dnn import FieldMLP
from prectr.models.registry import RankingModel, register
from prectr.modules.rsl import GRADES, RSLModule
from prectr.modules.text import Precision, TextEncoder, build_text_encoder, text_roles

EPS = 1e-6


@register("two_model")
class TwoModel(RankingModel):
    """The two-model pipeline that PRECTR (WWW 2025) replaces with one model.

    A relevance classifier (:class:`~prectr.modules.rsl.RSLModule` over a text encoder,
    cross-entropy on the rows with a human grade) and a CTR model (DNN's :class:`FieldMLP` on
    every feature but the student's pieces and the cache's text rows, which are the text
    encoder's alone; the words stay features, as in DNN; click cross-entropy on its own logit
    plus the position bias) are trained side by side with no shared parameters. The text encoder is
    PRECTR's choice, with the same parameters (:func:`~prectr.modules.text.build_text_encoder`:
    the bag of tokens by default, the distilled student, or a frozen encoder's cache), so the
    fusion can read the text as the unified model it is compared with does. They meet only at
    scoring: the ranking score is ``P(click) * E[grade] / 3``, the expected relevance utility
    in [0, 1] (smooth in the grade distribution, unlike a ``P(grade >= 2)`` threshold).
    ``logit`` is the logit of that product, clamped to ``[1e-6, 1 - 1e-6]``; scored, the CTR
    model's part is at the reference position (:meth:`click_logit`). The product is no click
    probability: only a post-hoc calibrator (``train.calibration``) makes it one. Like a
    production relevance model, the classifier learns from every labelled pair, shown or not.
    """

    training_rows = "exposed_or_labelled"

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        hidden: tuple[int, ...] = (256, 128, 64),
        relevance_hidden: tuple[int, ...] = (64, 32),
        dropout: float = 0.0,
        text_encoder: TextEncoder = "bag",
        student: str | None = None,
        frozen_encoder: bool = False,
        text_cache: str | None = None,
        encoder_precision: Precision = "fp32",
        student_frozen_layers: int = 0,
        student_reuse_steps: int = 0,
    ):
        super().__init__()
        text = build_text_encoder(text_encoder, specs, vocab_sizes, embedding_dim, student,
                                  frozen_encoder, text_cache, encoder_precision,
                                  student_frozen_layers, student_reuse_steps)  # fmt: skip
        self.relevance = RSLModule(text, text.out_dim, relevance_hidden)
        unread = in_group(specs, "text")  # the text encoder's own inputs are its alone
        ctr_specs = [s for s in specs if s not in unread]
        self.ctr = FieldMLP(ctr_specs, vocab_sizes, embedding_dim, hidden, dropout)
        self.register_buffer("utility", torch.arange(GRADES, dtype=torch.float32) / (GRADES - 1))

    @classmethod
    def feature_roles(cls, params: dict[str, Any]) -> dict[str, tuple[Role, ...]]:
        """The query and title features its text encoder reads."""
        return text_roles(params["text_encoder"])

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        grade_logits = self.relevance(batch)
        ctr_logit = self.ctr(batch)
        utility = torch.softmax(grade_logits, -1) @ self.utility
        return {
            "logit": product_logit(ctr_logit, utility),
            "ctr_logit": ctr_logit,
            "utility": utility,
            "grade_logits": grade_logits,
        }

    def click_logit(
        self, out: dict[str, torch.Tensor], position: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The product's logit with the CTR model's click probability at ``position``."""
        return product_logit(out["ctr_logit"] + self.bias(position), out["utility"])

    def loss(self, batch: Batch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        click = super().loss(batch, {"logit": out["ctr_logit"]})["loss_click"]
        relevance = grade_cross_entropy(
            out["grade_logits"], batch.relevance, batch.rows_of("labelled")
        )
        return {"loss": click + relevance, "loss_click": click, "loss_relevance": relevance}


def product_logit(ctr_logit: torch.Tensor, utility: torch.Tensor) -> torch.Tensor:
    """The logit of ``sigmoid(ctr_logit) * utility``, clamped to ``[1e-6, 1 - 1e-6]``."""
    p = (torch.sigmoid(ctr_logit) * utility).clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)
