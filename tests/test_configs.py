"""Every experiment config in configs/ loads, and names only parameters its model accepts."""

import inspect
from pathlib import Path

import pytest

from prectr.config import load_experiment
from prectr.models.registry import MODELS, build_model

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_config_names_a_model_and_only_parameters_it_accepts(path: Path) -> None:
    config = load_experiment(path)
    with pytest.raises(ValueError):  # registers every model, and refuses an unknown name
        build_model("no such model", [], {})
    assert config.model in MODELS, config.model
    accepted = set(inspect.signature(MODELS[config.model].__init__).parameters)
    assert set(config.model_params) <= accepted, set(config.model_params) - accepted


@pytest.mark.parametrize(("key", "value"), [("early_stopping_metric", "irrelevant@10"),
                                            ("calibration", "Platt")])  # fmt: skip
def test_a_choice_training_would_misread_is_refused_when_the_config_loads(key, value) -> None:
    with pytest.raises(ValueError, match=f"train.{key} '{value}'"):
        load_experiment(CONFIGS[0], [f"train.{key}={value}"])
