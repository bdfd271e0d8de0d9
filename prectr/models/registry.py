"""The model contract and the registry that builds models by name.

Every model learns a position bias (a "shallow tower", as in YouTube's ranker and PAL): a logit
per shown rank added to the click logit in training only, so clicks that position explains do
not teach the model false preferences; scoring ranks by the position-free logit.

A model owns its forward pass and its loss: ``forward(batch)`` returns at least ``logit``
(``(B,)``, the ranking logit of P(click)) and may return ``grade_logits`` (``(B, 4)``);
``loss(batch, out)`` returns ``loss`` (what is minimised) and any named parts, each logged
separately. ``score(out)`` is the click probability that evaluation and serving rank by.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from prectr.data.dataset import Batch
from prectr.losses.reduction import per_row

MODELS: dict[str, type[RankingModel]] = {}
MAX_POSITION = 64  # ranks beyond share the last position-bias slot


class RankingModel(nn.Module):
    name: ClassVar[str]
    # the candidates its loss reads: "exposed", "exposed_or_labelled" or "all" (see BatchStream)
    training_rows: ClassVar[str] = "exposed"
    # parameters a registered variant presets (e.g. PRECTR-V2 over PRECTR); the config wins
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.position_bias = nn.Embedding(MAX_POSITION + 1, 1)
        nn.init.zeros_(self.position_bias.weight)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def click_loss(self, batch: Batch, logit: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of clicks on the exposed rows, the position bias added to ``logit``."""
        exposed = batch.exposed
        shown = logit + self.position_bias(batch.position.clamp(max=MAX_POSITION)).squeeze(-1)
        total = F.binary_cross_entropy_with_logits(
            shown[exposed], batch.click[exposed], reduction="sum"
        )
        return per_row(total, batch.rows_of("exposed"))

    def loss(self, batch: Batch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        click = self.click_loss(batch, out["logit"])
        return {"loss": click, "loss_click": click}

    def score(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(out["logit"])


def register(name: str):
    def wrap(cls: type[RankingModel]) -> type[RankingModel]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return wrap


def build_model(
    name: str, specs: list, vocab_sizes: dict[str, int], params: dict[str, Any] | None = None
) -> RankingModel:
    """Build a registered model; an unknown name or parameter is refused by name."""
    # importing registers them: the baselines, PRECTR and PRECTR-V2
    import prectr.models.baselines
    import prectr.models.prectr  # noqa: F401

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    params = dict(params or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "specs", "vocab_sizes"}
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(
            f"model {name!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return cls(specs, vocab_sizes, **{**cls.defaults, **params})
