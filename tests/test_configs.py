"""Every experiment config in configs/ loads, names only parameters its model accepts and passes
the exported JSON schema; bad keys and values are refused naming their path."""

import inspect
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from prectr.cli import main
from prectr.config import (
    ExperimentConfig,
    config_schema,
    experiment_from_dict,
    load_experiment,
    read_config,
)
from prectr.data.features import FeatureConfig, feature_specs
from prectr.models.registry import MODELS, build_model, model_params
from prectr.section import ConfigError

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
    with pytest.raises(ValueError, match=rf"train.{key}: Input should be .* \(got '{value}'\)"):
        load_experiment(CONFIGS[0], [f"train.{key}={value}"])


V2 = Path(__file__).parents[1] / "configs" / "prectr_v2_bench.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model_params.consistency=mse", "Input should be 'ce', 'kl' or 'none' (got 'mse')"),
        ("model_params.debias_negatives=random",
         "Input should be 'synthetic', 'unexposed' or 'both' (got 'random')"),
        ("model_params.crowd_signal=mean", "Input should be 'entries' or 'relative' (got 'mean')"),
        ("model_params.encoder_precision=fp16",
         "Input should be 'auto', 'bf16' or 'fp32' (got 'fp16')"),
        ("model_params.mix_max=1.5", "Input should be less than or equal to 1 (got 1.5)"),
        ("train.device=gpu", "Input should be 'auto', 'cpu' or 'cuda' (got 'gpu')"),
    ],
)  # fmt: skip
def test_a_model_switch_or_device_is_refused_when_the_config_loads(override, message) -> None:
    """Before the log is read and prepared, not when the trainer builds the model."""
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=re.escape(f"{key}: {message}")):
        load_experiment(V2, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "greater than or equal to 1 (got 0)"),
        ("data.shards=0", "greater than or equal to 1 (got 0)"),
        ("data.test_days=0", "greater than or equal to 1 (got 0)"),
        ("train.epochs=-1", "greater than or equal to 0 (got -1)"),
        ("train.lr_dense=-0.001", "greater than or equal to 0 (got -0.001)"),
        ("train.log_every=0", "greater than or equal to 1 (got 0)"),
        ("train.reference_position=65", "less than or equal to 64 (got 65)"),
        ("features.crowd_days=0", "greater than 0 (got 0)"),
        ("features.user_clicks=0", "greater than or equal to 1 (got 0)"),
    ],
)  # fmt: skip
def test_a_size_count_or_rate_out_of_its_range_is_refused_when_the_config_loads(
    override, message
) -> None:
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=re.escape(f"{key}: Input should be {message}")):
        load_experiment(V2, [override])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"lr_dens": 1}}, "c.yaml: train.lr_dens: unknown key; did you mean lr_dense?"),
        ({"features": {"includ": []}}, "features.includ: unknown key; did you mean include?"),
        ({"model_params": {"hiden": [8]}}, "model_params.hiden: unknown key; did you mean hidden?"),
        ({"model_params": {"layers": 3}},
         "model_params.layers: unknown key; known: dropout, embedding_dim, hidden"),
        ({"model": "dnnn"}, "model: unknown model 'dnnn'; did you mean dnn?"),
        ({"modle": "dnn"}, "modle: unknown key; did you mean model?"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_named_with_the_closest_known_one(values, message) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        experiment_from_dict({"model": "dnn", **values}, "c.yaml")


def write(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_config_changes_its_base_key_by_key_and_names_itself(tmp_path) -> None:
    """Mappings merge through every level of bases, lists and scalars are the file's own, the
    name is never inherited, and overrides apply to the whole."""
    write(tmp_path / "ref" / "a.yaml", {
        "model": "dnn", "name": "a", "model_params": {"hidden": [64, 32], "dropout": 0.1},
        "data": {"batch_size": 512, "test_days": 3}, "train": {"epochs": 3, "lr_dense": 0.01},
    })  # fmt: skip
    write(tmp_path / "ref" / "b.yaml", {"base": "a.yaml", "name": "b",
                                        "model_params": {"hidden": [8]}})  # fmt: skip
    child = write(tmp_path / "c.yaml", {"base": "ref/b.yaml", "train": {"epochs": 1}})
    assert read_config(child) == {
        "model": "dnn", "model_params": {"hidden": [8], "dropout": 0.1},
        "data": {"batch_size": 512, "test_days": 3}, "train": {"epochs": 1, "lr_dense": 0.01},
    }  # fmt: skip
    config = load_experiment(child, ["train.lr_dense=0.5"])
    assert config.name == "" and config.model_params["hidden"] == [8]
    assert (config.train.epochs, config.train.lr_dense, config.data.batch_size) == (1, 0.5, 512)
    assert "base" not in config.to_dict()  # a run saves the whole config, not the chain
    link = tmp_path / "elsewhere" / "link.yaml"  # a base is read beside the file a link names
    link.parent.mkdir()
    link.symlink_to(tmp_path / "ref" / "b.yaml")
    assert read_config(link)["model_params"] == {"hidden": [8], "dropout": 0.1}


LOOP = r"c.yaml: its bases come back to a file: .*c.yaml -> .*d.yaml -> .*c.yaml"


@pytest.mark.parametrize(
    ("files", "error", "message"),
    [
        ({"c.yaml": {"base": "gone.yaml"}}, FileNotFoundError,
         r"gone.yaml: no such config file \(the base of .*c.yaml\)"),
        ({"c.yaml": {"base": "d.yaml"}, "d.yaml": {"base": "c.yaml"}}, ValueError, LOOP),
        ({"c.yaml": {"base": "c.yaml"}}, ValueError, "come back"),
        ({"c.yaml": {"base": ["a.yaml"]}}, ValueError,
         r"c.yaml: base: a config file's path, not \['a.yaml'\]"),
        ({"c.yaml": {"base": None}}, ValueError, "c.yaml: base: a config file's path, not None"),
        ({"c.yaml": {"base": "d.yaml"}, "d.yaml": [1, 2]}, ValueError,
         "d.yaml: a config is a mapping of sections, not list"),
    ],
)  # fmt: skip
def test_a_base_that_is_missing_looping_or_not_a_config_is_refused(tmp_path, files, error, message):
    for name, values in files.items():
        write(tmp_path / name, values)
    with pytest.raises(error, match=message):
        load_experiment(tmp_path / "c.yaml")


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    with pytest.raises(ValueError) as caught:
        values = {"model_params": {"hidden": ["wide"]}, "data": {"batch_size": "big"},
                  "train": {"epochs": 2.5}}  # fmt: skip
        experiment_from_dict({"model": "dnn", **values}, "c.yaml")
    lines = sorted(str(caught.value).splitlines())
    assert [line.split(": ")[1] for line in lines] == [
        "data.batch_size",
        "model_params.hidden.0",
        "train.epochs",
    ]
    assert all(line.startswith("c.yaml: ") for line in lines)
    assert {e["loc"] for e in caught.value.errors} == {
        ("data", "batch_size"),
        ("model_params", "hidden", 0),
        ("train", "epochs"),
    }


def test_model_params_are_checked_through_pydantic_and_kept_as_given() -> None:
    config = experiment_from_dict(
        {
            "model": "prectr_v2",
            "model_params": {"dropout": 0},
            "features": {"relevance_context": True},
        }
    )
    assert config.model_params == {"dropout": 0.0}
    assert isinstance(config.model_params["dropout"], float)
    assert model_params("dnn", {"hidden": (8, 4)}) == {"hidden": [8, 4]}  # YAML's types
    with pytest.raises(ValidationError, match="unknown key; did you mean hidden"):
        model_params("dnn", {"hiden": [8]})


def test_a_section_is_checked_on_assignment_and_update() -> None:
    config = experiment_from_dict({"model": "dnn"})
    with pytest.raises(ValidationError, match="epochs"):
        config.train.epochs = "two"
    assert config.train.updated(calibration="isotonic").calibration == "isotonic"
    with pytest.raises(ValidationError, match="calibration"):
        config.train.updated(calibration="Platt")
    assert experiment_from_dict({"model": "dnn"}).train is not config.train  # no shared default


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_config_round_trips_through_to_dict(path: Path) -> None:
    config = load_experiment(path)
    again = experiment_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config
    assert FeatureConfig.model_validate(config.features.model_dump()) == config.features


def test_every_config_passes_the_exported_schema_and_a_typo_does_not(tmp_path, capsys) -> None:
    main_schema = tmp_path / "prectr-config.schema.json"
    with pytest.raises(SystemExit) as done:
        main(["config", "schema", "--out", str(main_schema)])
    assert done.value.code == 0
    assert str(main_schema) in capsys.readouterr().out
    schema = json.loads(main_schema.read_text())
    assert schema == config_schema()
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for path in CONFIGS:
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path.name
    assert schema["properties"]["model"]["enum"] == sorted(MODELS)
    bad = [
        {"model": "dnn", "train": {"lr_dens": 1}},
        {"model": "dnn", "model_params": {"relevance_hidden": [8]}},  # a parameter of prectr
        {"model": "gbdt"},
        {"model": "dnn", "train": {"epochs": "x"}},
        {"train": {"epochs": 1}},  # neither a model nor a base to take it from
        {"base": "prectr_v2_bench.yaml", "model_params": {"cross_usr": False}},  # no model takes it
        {"base": ""},
    ]
    for values in bad:  # each refused by the schema as by the loader
        assert list(validator.iter_errors(values)), values
        with pytest.raises(ValueError):
            experiment_from_dict(values)
    with pytest.raises(SystemExit):
        main(["config", "schema"])
    assert json.loads(capsys.readouterr().out) == schema


def test_the_schema_describes_each_section() -> None:
    schema = ExperimentConfig.model_json_schema()
    assert set(schema["$defs"]) == {"DataConfig", "FeatureConfig", "TrainConfig"}
    train = schema["$defs"]["TrainConfig"]
    assert train["additionalProperties"] is False
    assert train["properties"]["calibration"]["enum"] == ["none", "platt", "isotonic"]


def test_every_key_of_the_schema_has_a_description() -> None:
    """Every section key and every model's parameters, as an editor shows them on hover."""
    schema = config_schema()
    described = {"": schema, **schema["$defs"]}
    lacking = [f"{where}.{key}" for where, part in described.items()
               for key, value in part["properties"].items()
               if not value.get("description", "").strip()]  # fmt: skip
    assert not lacking, lacking
    assert {f"{m}_params" for m in MODELS} <= set(schema["$defs"])
    patience = schema["$defs"]["TrainConfig"]["properties"]["patience"]["description"]
    assert "0: never" in patience  # a field's own docstring, not its section's


def test_a_model_parameter_without_a_description_is_refused(monkeypatch) -> None:
    class Mystery(MODELS["dnn"]):
        name = "mystery"

        def __init__(self, specs: list, vocab_sizes: dict[str, int], depth: int = 2):
            super().__init__(specs, vocab_sizes)

    monkeypatch.setitem(MODELS, "mystery", Mystery)
    message = r"model mystery declares parameters without a description in .*: depth$"
    with pytest.raises(TypeError, match=message):
        model_params("mystery", {"depth": 3})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"epochs": True}}, "train.epochs: expected a number, not a boolean"),
        ({"data": {"batch_size": False}}, "data.batch_size: expected a number, not a boolean"),
        ({"train": {"lr_dense": True}}, "train.lr_dense: expected a number, not a boolean"),
        ({"model_params": {"hidden": [True, 64]}}, "model_params.hidden: expected a number"),
    ],
)
def test_a_boolean_is_not_taken_for_a_number(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        experiment_from_dict({"model": "dnn", **values})
    flag = experiment_from_dict({"model": "dnn", "train": {"position_bias": False}})
    assert (
        flag.train.position_bias is False
        and flag.train.epochs == ExperimentConfig(model="dnn").train.epochs
    )


CONTEXT = {"relevance_context": True}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "prectr_v2"}, "model prectr_v2: PreferenceMining reads match.level "
         "(match_level; set features.relevance_context)"),
        ({"model": "prectr_v1", "model_params": {"text_encoder": "student"}, "features": CONTEXT},
         "model prectr_v1: StudentText reads text.query_pieces (query_pieces; "
         "set features.student)"),
        ({"model": "prectr_v1", "model_params": {"text_encoder": "cache"}, "features": CONTEXT},
         "model prectr_v1: CachedText reads text.query_embedding (query_text; "
         "set features.text_cache)"),
        ({"model": "two_model", "features": {"include": ["item_id", "title_tokens"]}},
         "model two_model: BagOfTokensEncoder reads query.words (query_tokens; "
         "features.include leaves it out)"),
        ({"model": "din", "features": {"include": ["user_id", "item_id", "category"]}},
         "model din: CandidateInterest reads user_history.item (user_clicks; features.include "
         "leaves it out), user_history.category (user_click_categories; "),
    ],
)  # fmt: skip
def test_features_a_model_reads_and_the_config_lacks_are_refused_when_it_loads(values, message):
    with pytest.raises(ConfigError, match=re.escape(f"c.yaml: features: {message}")):
        experiment_from_dict(values, "c.yaml")


def test_the_activity_gate_needs_the_user_activity_and_nothing_else_does() -> None:
    every = [s.name for s in feature_specs(FeatureConfig(relevance_context=True), True)]
    features = {"relevance_context": True, "include": [n for n in every if n != "user_activity"]}
    assert experiment_from_dict({"model": "prectr_v2", "features": features})
    gated = {"model": "prectr_v2", "features": features, "model_params": {"activity_gate": True}}
    with pytest.raises(ConfigError, match=r"PreferenceMining reads user\.activity"):
        experiment_from_dict(gated)


def test_train_refuses_a_feature_left_out_before_reading_the_log(tmp_path, capsys) -> None:
    config = Path(__file__).parents[1] / "configs" / "din_small.yaml"
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as done:  # the log does not exist: the config fails first
        main(["train", str(config), "--log", str(tmp_path / "no log"), "--out", str(run),
              "--set", "features.include=[user_id, query, category, user_clicks]"])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 2 and "CandidateInterest reads item.identity (item_id;" in out, out
    assert not run.exists()
