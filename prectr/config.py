"""Typed experiment configs: YAML files of nested sections, with command-line overrides.

A config names a model and its parameters, the features, the data and the training loop.
Unknown keys and values of the wrong type are refused before anything runs, naming the key; so
are an unknown model and its unknown or ill-typed parameters.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from prectr.data.features import FeatureConfig


@dataclass
class DataConfig:
    log: str | None = None  # a log directory in the schema (a simulated world is one)
    batch_size: int = 2048  # rows per optimiser step, shared out among the processes
    buffer_rows: int = 262_144  # rows read and shuffled together
    shards: int = 8  # parquet shards per split; at least the number of training processes
    # where prepare writes and training reads the shards: a local folder or a pyarrow
    # filesystem URI (file://, s3://, gs://, hdfs://, ...); default: the run directory's data/
    shards_uri: str | None = None
    prefetch: int = 2  # training batches assembled ahead in a background thread (0: none)
    valid_days: int = 1
    test_days: int = 1


#: what the trainer's validation computes and early stopping can watch
STOPPING_METRICS = ("auc", "gauc_user", "gauc_request", "logloss", "ece")
CALIBRATIONS = ("none", "platt", "isotonic")  # prectr.models.calibration.KINDS


@dataclass
class TrainConfig:
    # stage 1 (models with a relevance module): epochs fitting it alone on the human grades
    relevance_epochs: int = 0
    epochs: int = 2
    lr_dense: float = 1e-3
    lr_embedding: float = 1e-2
    lr_encoder: float = 1e-4
    # the position bias (one logit per shown rank): its own group, no weight decay
    lr_position: float = 0.1  # Adam moves it at most this per step (trainer.param_groups)
    weight_decay: float = 1e-5  # dense and encoder parameters only
    clip_norm: float = 5.0
    early_stopping_metric: str = "auc"  # one of STOPPING_METRICS
    patience: int = 2  # epochs without improvement before stopping
    seed: int = 0
    log_every: int = 50  # steps between train-log lines
    checkpoint_every: int = 200  # steps between `last` checkpoints (and at each epoch end)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    device: str = "auto"  # auto (this process's GPU if there is one) | cpu | cuda
    position_bias: bool = True  # learn the per-rank click bias (shallow tower) in training
    reference_position: int = 1  # the shown rank that scores are served at (registry.py)
    # post-hoc calibration fitted on the validation days after training: one of CALIBRATIONS;
    # platt by default: uncalibrated, every PRECTR run over-predicted on its validation day
    # (docs/fidelity.md), and a monotone map changes no ranking
    calibration: str = "platt"

    def __post_init__(self) -> None:
        """Choices that would otherwise fail (or be misread) only after training."""
        for key, value, allowed in (
            ("early_stopping_metric", self.early_stopping_metric, STOPPING_METRICS),
            ("calibration", self.calibration, CALIBRATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"train.{key} {value!r}: expected one of {', '.join(allowed)}")


@dataclass
class ExperimentConfig:
    model: str
    name: str = ""
    model_params: dict[str, Any] = field(default_factory=dict)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    out = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            out[name] = _build(hint, value, key)
        else:
            out[name] = check_type(hint, value, key)
    try:
        return cls(**out)
    except TypeError as err:
        raise ValueError(f"{where or 'config'}: {err}") from None


def check_type(hint: Any, value: Any, key: str) -> Any:
    """``value`` if it is of type ``hint`` (an int is taken for a float, a YAML list for a
    tuple), else a ValueError naming ``key``."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return None
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, dict, bool) and isinstance(value, base):
            return value
        if base in (list, tuple) and isinstance(value, list | tuple):
            inner = typing.get_args(option)
            if all(not inner or check_type(inner[0], v, key) == v for v in value):
                return value
        if base is Any:
            return value
    raise ValueError(f"config key {key!r} expects {hint}, got {value!r}")


def experiment_from_dict(values: dict[str, Any], where: str = "config") -> ExperimentConfig:
    """Build a checked config from a mapping (as saved in a run's config.yaml)."""
    from prectr.models.registry import model_params

    if "model" not in values:
        raise ValueError(f"{where}: the config names no model")
    config = _build(ExperimentConfig, values, "")
    model_params(config.model, config.model_params)
    return config


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config, then apply ``section.key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    values = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        target = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        target[leaf] = yaml.safe_load(raw)
    return experiment_from_dict(values, str(path))
