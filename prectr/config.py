"""Typed experiment configs: YAML files of nested sections, with command-line overrides.

A config names a model and its parameters, the features, the data and the training loop. Each
section is a pydantic model (:class:`prectr.section.Section`): unknown keys (with the closest
known one) and values of the wrong type are refused before anything runs, naming the key's path;
so are an unknown model and its unknown or ill-typed parameters, checked against the parameters
its constructor declares (:func:`prectr.models.registry.params_model`). A config may name
another as its ``base`` and change some of its keys (:func:`read_config`). :func:`config_schema`
is the JSON schema of a config file, for editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from prectr.data.features import FeatureConfig, feature_specs, undeclared
from prectr.data.groups import find
from prectr.models.calibration_kinds import Kind as Calibration
from prectr.models.registry import (
    MAX_POSITION,
    feature_roles,
    model_params,
    params_model,
    registered_models,
)
from prectr.section import ConfigError, Section, suggestion
from prectr.train.allocator import KEEP_FREED_MB, MAX_MB


class DataConfig(Section):
    """Where the log is and how its rows reach training."""

    log: str | None = None
    """The log directory, in the search-log schema (a simulated world is one); ``--log``
    overrides it."""
    batch_size: int = Field(2048, ge=1)
    """Exposed impressions (or rows, see batch_counts) per optimiser step, shared out among
    the processes."""
    batch_counts: Literal["rows", "exposed"] = "exposed"
    """What batch_size counts: exposed impressions, with whatever other rows of their
    requests the model's loss reads beside them (graded candidates for PRECTR's consistency
    and the two-model fusion, every candidate for PRECTR-V2's unexposed negatives), so that
    every model takes steps of the same number of impressions; or every row a batch holds.
    The relevance stage (``train.relevance_epochs``) always counts rows: its examples are
    graded pairs, not impressions."""
    buffer_rows: int = Field(262_144, ge=1)
    """Rows read and shuffled together."""
    shards: int = Field(8, ge=1)
    """Parquet shards per split; at least the number of training processes."""
    shards_uri: str | None = None
    """Where prepare writes and training reads the shards: a local folder or a pyarrow
    filesystem URI (file://, s3://, gs://, hdfs://, ...); default: the run directory's data/."""
    prefetch: int = Field(2, ge=0)
    """Training batches assembled ahead in a background thread (0: none)."""
    chunk_rows: int = Field(1_000_000, ge=1)
    """Candidates prepare encodes together (its memory bound)."""
    valid_days: int = Field(1, ge=1)
    """Days after the training days that form the validation split."""
    test_days: int = Field(1, ge=1)
    """Last days of the log that form the test split."""


#: what the trainer's validation computes and early stopping can watch
StoppingMetric = Literal["auc", "gauc_user", "gauc_request", "logloss", "ece"]


class TrainConfig(Section):
    """The training loop: stages, learning rates, stopping, checkpoints, calibration."""

    relevance_epochs: int = Field(0, ge=0)
    """Stage 1 (models with a relevance module): epochs fitting it alone on the human
    grades."""
    epochs: int = Field(2, ge=0)
    """Epochs of the model's own loss (stage 2 where there is a stage 1)."""
    lr_dense: float = Field(1e-3, ge=0)
    """Learning rate of the dense parameters."""
    lr_embedding: float = Field(1e-2, ge=0)
    """Learning rate of the embedding tables."""
    lr_encoder: float = Field(1e-4, ge=0)
    """Learning rate of a student text encoder trained end to end."""
    lr_position: float = Field(0.1, ge=0)
    """Learning rate of the position bias (one logit per shown rank; its own group, no weight
    decay): Adam moves it at most this per step."""
    weight_decay: float = Field(1e-5, ge=0)
    """Weight decay of the dense and encoder parameters only."""
    clip_norm: float = Field(5.0, gt=0)
    """Gradients are clipped to this global norm."""
    sparse_embeddings: bool = False
    """Row-wise embedding gradients stepped by lazy Adam: processes exchange the rows a step
    looked up, not whole tables (prectr/train/optim.py)."""
    fused_optimizer: bool = True
    """AdamW's fused kernel (one pass over each group's parameters; the same update) in place
    of torch's per-tensor loop: DNN on `bench`, one thread, 1.14-1.17x the samples/s (about 5 ms
    a step); PRECTR-V2 within noise (BENCHMARKS.md)."""
    early_stopping_metric: StoppingMetric = "auc"
    """The validation metric that picks the best checkpoint and stops the run."""
    patience: int = Field(2, ge=0)
    """Validations without a better early_stopping_metric before the run stops (0: never):
    epochs, unless ``validate_every`` validates within them."""
    validate_every: int = Field(0, ge=0)
    """Steps between validations in the click stage (counted as the run counts its steps, the
    relevance stage's included), and one after its last step; 0 validates at each epoch's
    end. CTR models often peak within their first epoch and fall in the second (the one-epoch
    phenomenon, Zhang et al., CIKM 2022): validating within it lets the best checkpoint fall
    between epoch ends."""
    seed: int = 0
    """Seed of the weights' start and of the batches' order."""
    log_every: int = Field(50, ge=1)
    """Steps between train-log lines."""
    checkpoint_every: int = Field(200, ge=0)
    """Steps between last checkpoints (one is also written at each epoch's end; 0: only
    there)."""
    threads: int = Field(0, ge=0)
    """Torch intra-op threads; 0 keeps torch's default."""
    keep_freed_mb: int = Field(KEEP_FREED_MB, ge=0, le=MAX_MB)
    """Freed memory (MB) the C library's allocator keeps for the next step instead of handing
    it back to the system, process-wide (glibc's ``M_TOP_PAD``, :mod:`prectr.train.allocator`;
    elsewhere it changes nothing); 0 keeps the C library's default. The process may hold this
    much more than it uses."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto (this process's GPU if there is one), cpu or cuda."""
    position_bias: bool = True
    """Learn the per-rank click bias (the shallow tower) in training; false keeps every rank
    at the training click rate's log-odds, so no score depends on position."""
    reference_position: int = Field(1, ge=1, le=MAX_POSITION)
    """The shown rank that scores are served at (prectr/models/registry.py)."""
    calibration: Calibration = "platt"
    """Post-hoc calibration fitted on the validation days after training (none, platt or
    isotonic); platt by default: uncalibrated, every PRECTR run over-predicted on its
    validation day (docs/fidelity.md), and a monotone map changes no ranking."""


class ExperimentConfig(Section):
    """An experiment: a model and its parameters, the features, the data and the training."""

    model: str
    """The registered model to train."""
    name: str = ""
    """The experiment's name, for the reader."""
    model_params: dict[str, Any] = Field(default_factory=dict)
    """The model's constructor parameters (each model's are in this schema's $defs)."""
    # validated even when left out: the model may read features the defaults do not declare
    features: FeatureConfig = Field(default_factory=FeatureConfig, validate_default=True)
    """Which features the model sees and how long each sequence is."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The log, its split into days, and the batches and shards training reads."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """The training loop."""

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        models = registered_models()
        if name not in models:
            raise PydanticCustomError(
                "unknown_model", "unknown model '{name}'; {hint}",
                {"name": name, "hint": suggestion(name, models)},
            )  # fmt: skip
        return name

    @field_validator("model_params", mode="wrap")
    @classmethod
    def _accepted_by_the_model(cls, params: Any, handler: Any, info: ValidationInfo) -> Any:
        """The parameters checked against the model's constructor (pydantic's errors, under
        ``model_params``); unchecked when the model itself was refused."""
        params = handler(params)
        return model_params(info.data["model"], params) if "model" in info.data else params

    @field_validator("features")
    @classmethod
    def _declare_what_the_model_reads(
        cls, features: FeatureConfig, info: ValidationInfo
    ) -> FeatureConfig:
        """Every feature the model's modules read is declared: a config that leaves one out
        (a switch unset, or ``features.include`` without it) is refused here, naming the
        module, the feature's group and role, and the setting that declares it. Unchecked when
        the model or its parameters were refused. The query category counts as declared: only
        the log says whether it has one, and no module needs it."""
        if "model" not in info.data or "model_params" not in info.data:
            return features
        specs = feature_specs(features, has_query_category=True)
        needs = feature_roles(info.data["model"], info.data["model_params"])
        lacking = {reader: [f"{role} ({undeclared(features, role)})" for role in roles
                            if find(specs, role) is None]
                   for reader, roles in needs.items()}  # fmt: skip
        lines = [f"{reader} reads {', '.join(roles)}" for reader, roles in lacking.items() if roles]
        if lines:
            raise PydanticCustomError(
                "undeclared_feature", "model {model}: {lines}",
                {"model": info.data["model"], "lines": "; ".join(lines)},
            )  # fmt: skip
        return features

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def experiment_from_dict(values: Any, where: str = "config") -> ExperimentConfig:
    """Build a checked config from a mapping (as saved in a run's config.yaml); a
    :class:`ConfigError` names each problem's key path."""
    try:
        return ExperimentConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(where, err) from None


def saved_experiment(run_dir: str | Path) -> ExperimentConfig:
    """The config a run saved (its ``config.yaml``); a directory without one is not a run. A
    run saved before ``data.batch_counts`` existed batched by rows, the only way then, so a
    missing key reads as ``rows``, not as today's default."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    values = yaml.safe_load(path.read_text()) or {}
    if isinstance(values.get("data"), dict):
        values["data"].setdefault("batch_counts", "rows")
    return experiment_from_dict(values, str(path))


BASE = "base"
"""The key by which a config file names the config it changes (a path relative to its own
directory): see :func:`read_config`."""


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's settings laid over those of the config it names as ``base``, that one's
    over its own base, and so on: mappings merge key by key, any other value (a list included)
    is the file's own. ``name`` is not inherited (a config without one is named by the
    commands after its file). An ablation is thus its reference config and the keys it
    changes; a key can be changed, not removed. The base's path is read from the directory of
    the file itself, a link followed. A base that is missing or empty, a file that is not a
    mapping, and a chain that comes back to a file are refused, naming the files."""
    return _read_config(Path(path), ())


def _read_config(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ValueError(f"{chain[0]}: its bases come back to a file: {loop}")
    if not path.is_file():
        named = f" (the base of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"{path}: no such config file{named}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a mapping of sections, not {type(values).__name__}")
    if BASE not in values:
        return values
    base = values.pop(BASE)
    if not isinstance(base, str) or not base:
        raise ValueError(f"{path}: {BASE}: a config file's path, not {base!r}")
    inherited = _read_config(path.resolve().parent / base, (*chain, path.resolve()))
    inherited.pop("name", None)
    return _laid_over(inherited, values)


def _laid_over(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over``'s keys laid over ``under``'s, mappings merged key by key."""
    merged = dict(under)
    for key, value in over.items():
        below = merged.get(key)
        both = isinstance(below, dict) and isinstance(value, dict)
        merged[key] = _laid_over(below, value) if both else value
    return merged


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (with its bases, :func:`read_config`), then apply
    ``section.key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    values = read_config(path)
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


def config_schema() -> dict[str, Any]:
    """The JSON schema of an experiment config file: every section's keys, types and defaults,
    ``model`` one of the registered models and ``model_params`` the chosen model's parameters
    (one ``if model is X then model_params is X's`` clause per model), and ``base``. A file
    with a base is checked for its own keys; where it leaves the model to its base, its
    ``model_params`` must all be parameters of one model (the loader checks the whole,
    :func:`read_config`)."""
    schema = ExperimentConfig.model_json_schema()
    models = registered_models()
    schema["properties"]["model"]["enum"] = models
    schema["properties"][BASE] = {
        "type": "string",
        "minLength": 1,
        "title": "Base",
        "description": "The config this one changes, a path relative to this file: its "
        "settings lie beneath this file's (mappings merged key by key), its name excepted.",
    }
    schema["required"].remove("model")  # a config with a base may leave it to the base
    if not schema["required"]:
        del schema["required"]
    schema["anyOf"] = [{"required": ["model"]}, {"required": [BASE]}]
    clauses = []
    for name in models:
        params = params_model(name).model_json_schema()
        schema["$defs"][f"{name}_params"] = params
        clauses.append({
            "if": {"properties": {"model": {"const": name}}, "required": ["model"]},
            "then": {"properties": {"model_params": {"$ref": f"#/$defs/{name}_params"}}},
        })  # fmt: skip
    # without its model named here, the parameters must be those of some model
    some_model = [{"$ref": f"#/$defs/{name}_params"} for name in models]
    clauses.append({
        "if": {"not": {"required": ["model"]}},
        "then": {"properties": {"model_params": {"anyOf": some_model}}},
    })  # fmt: skip
    schema["allOf"] = clauses
    return schema
