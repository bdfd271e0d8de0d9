"""The model contract and the registry that builds models by name.

Every model learns a position bias (a "shallow tower", as in YouTube's ranker and PAL): a logit
per shown rank added to the click logit, trained in its own parameter group
(``train.lr_position``), so clicks that position explains do not teach the model false
preferences. The split between the bias and the model's own intercept is arbitrary, so a score
without a position means nothing in absolute terms; every score is therefore *at a position*:

* served and ranked (:meth:`RankingModel.score`): at the fixed reference position
  (``train.reference_position``, default 1). The top slot is what a serving engineer reads a
  CTR as ("the click rate of this item in the first slot"), it is a real position the bias was
  trained on, and a constant shift of the logit leaves the ranking unchanged. An
  impression-weighted mean of the biases would be the logit of no actual slot, and it would
  drift with the logging policy.
* checked for calibration (:meth:`RankingModel.shown_probability`): at each impression's
  logged position, the probability the click loss trains, so mean predicted over observed CTR
  compares like with like on impressions spread over positions.

Both pass through the run's post-hoc calibrator (:mod:`prectr.models.calibration`; the sigmoid
by default).

A model owns its forward pass and its loss: ``forward(batch)`` returns at least ``logit``
(``(B,)``, the ranking logit of P(click)) and may return ``grade_logits`` (``(B, 4)``);
``loss(batch, out)`` returns ``loss`` (what is minimised) and any named parts, each logged
separately. ``score(out)`` is the click probability that evaluation and serving rank by.
A model whose ranking logit is not its click logit (two_model) overrides :meth:`click_logit`.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from typing import Any, ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from prectr.data.dataset import Batch
from prectr.data.groups import Role
from prectr.losses.reduction import per_row
from prectr.models.calibration import Calibrator
from prectr.models.parameters import DESCRIPTIONS
from prectr.section import Section, suggestion

MODELS: dict[str, type[RankingModel]] = {}
MAX_POSITION = 64  # ranks beyond share the last position-bias slot
REFERENCE_POSITION = 1


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
        self.reference_position = REFERENCE_POSITION
        self.calibrator = Calibrator()

    @classmethod
    def feature_roles(cls, params: dict[str, Any]) -> dict[str, tuple[Role, ...]]:
        """The features each module of the model reads, under the module's name, given
        ``params`` (every constructor parameter after the specs and vocabulary sizes): what the
        features must declare for the model to be built. None here: a model that reads every
        field as it comes (LR, DNN, DeepFM, DCN-V2) reads whatever the features hold."""
        return {}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def click_loss(
        self, batch: Batch, logit: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of clicks on the exposed rows, the position bias added to ``logit``:
        the logits of every row, or of the batch's ``rows`` alone (they must hold every exposed
        row)."""
        exposed, position, click = batch.exposed, batch.position, batch.click
        if rows is not None:
            exposed, position, click = exposed[rows], position[rows], click[rows]
        shown = logit + self.bias(position)
        total = F.binary_cross_entropy_with_logits(shown[exposed], click[exposed], reduction="sum")
        return per_row(total, batch.rows_of("exposed"))

    def loss(self, batch: Batch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        click = self.click_loss(batch, out["logit"])
        return {"loss": click, "loss_click": click}

    def start_at_rate(self, ctr: float) -> None:
        """Start the position bias of every rank at the log-odds of ``ctr`` (the training
        impressions' click-through rate), so that the model's own logit starts at the base
        rate and learns what departs from it. From a zero bias the model must first pull every
        logit down to the base rate (about -2 at a 12% CTR) and does so largely through its
        features; on a small log that takes most of an epoch (on ``tiny``, 8 steps of 2,048
        rows), and a model stopped there ranks below random (README, "A first run")."""
        with torch.no_grad():
            self.position_bias.weight.fill_(math.log(ctr / (1 - ctr)))

    def bias(self, position: torch.Tensor | None) -> torch.Tensor:
        """The position bias of each shown rank; of the reference position when None."""
        if position is None:
            return self.position_bias.weight[self.reference_position, 0]
        return self.position_bias(position.clamp(max=MAX_POSITION)).squeeze(-1)

    def click_logit(
        self, out: dict[str, torch.Tensor], position: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The logit of P(click) shown at ``position`` (None: the reference position)."""
        return out["logit"] + self.bias(position)

    def score(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The calibrated click probability at the reference position: what ranks and serves."""
        return self.calibrator(self.click_logit(out))

    def shown_probability(
        self, out: dict[str, torch.Tensor], position: torch.Tensor
    ) -> torch.Tensor:
        """The calibrated click probability at each row's logged position (calibration
        metrics)."""
        return self.calibrator(self.click_logit(out, position))


def register(name: str):
    def wrap(cls: type[RankingModel]) -> type[RankingModel]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return wrap


def registered_models() -> list[str]:
    """The names of the registered models, sorted."""
    # importing registers them: the baselines, PRECTR and PRECTR-V2
    import prectr.models.baselines
    import prectr.models.prectr  # noqa: F401

    return sorted(MODELS)


def params_model(name: str) -> type[Section]:
    """The parameters registered model ``name`` declares, as a config section: its
    constructor's arguments after ``specs`` and ``vocab_sizes``, with their types and defaults
    (a variant's :attr:`RankingModel.defaults` over the constructor's)."""
    if name not in registered_models():
        raise ValueError(f"unknown model {name!r}; {suggestion(name, MODELS)}")
    return _params_model(MODELS[name])


@functools.cache
def _params_model(cls: type[RankingModel]) -> type[Section]:
    hints = typing.get_type_hints(cls.__init__, include_extras=True)  # bounds kept
    declared = inspect.signature(cls.__init__).parameters.values()
    names = [p.name for p in declared if p.name not in ("self", "specs", "vocab_sizes")]
    undescribed = [name for name in names if name not in DESCRIPTIONS]
    if undescribed:
        raise TypeError(f"model {cls.name} declares parameters without a description in "
                        f"prectr.models.parameters: {', '.join(undescribed)}")  # fmt: skip
    defaults = {p.name: cls.defaults.get(p.name, p.default) for p in declared}
    fields: dict[str, Any] = {
        name: (hints[name], pydantic.Field(defaults[name], description=DESCRIPTIONS[name]))
        for name in names
    }
    return pydantic.create_model(f"{cls.name}_params", __base__=Section, **fields)


def model_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of registered model ``name`` checked against :func:`params_model`: an
    unknown model is a ValueError, an unknown parameter (with the closest accepted one) or a
    value of the wrong type a pydantic ValidationError naming it. Returns the given parameters
    as checked, in YAML's types (an integer given for a float made a float, tuples lists)."""
    checked = params_model(name).model_validate(params or {})
    return checked.model_dump(mode="json", exclude_unset=True)


def feature_roles(name: str, params: dict[str, Any] | None = None) -> dict[str, tuple[Role, ...]]:
    """What each module of registered model ``name`` reads under ``params`` (checked as
    :func:`model_params` checks them, the model's defaults filling the rest), by module."""
    checked = params_model(name).model_validate(params or {})
    return MODELS[name].feature_roles(checked.model_dump())


def build_model(
    name: str,
    specs: list,
    vocab_sizes: dict[str, int],
    params: dict[str, Any] | None = None,
    reference_position: int = REFERENCE_POSITION,
) -> RankingModel:
    """Build a registered model that scores at ``reference_position``; an unknown name or
    parameter, or a parameter of the wrong type, is refused by name (:func:`model_params`)."""
    params = model_params(name, params)
    if not 1 <= reference_position <= MAX_POSITION:
        raise ValueError(f"reference position {reference_position}: expected 1..{MAX_POSITION}")
    cls = MODELS[name]
    model = cls(specs, vocab_sizes, **{**cls.defaults, **params})
    model.reference_position = reference_position
    return model
