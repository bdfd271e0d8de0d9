import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from prectr.config import load_experiment
from prectr.metrics import logloss
from prectr.train.checkpoint import load_checkpoint
from prectr.train.run import load_trained
from prectr.train.stages import StopTraining
from prectr.train.trainer import Trainer, predict
from tests.conftest import tiny_config

RUN_FILES = (
    "config.yaml", "log.txt", "train_log.jsonl", "metrics.json", "features/features.json",
    "checkpoints/best.pt", "checkpoints/last.pt",
)  # fmt: skip


def test_a_run_directory_holds_everything(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "tb").iterdir()), "TensorBoard scalars"
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["best_valid"]["auc"] > 0.5 and metrics["train_samples_per_s"] > 0
    assert 0 < metrics["peak_rss_mb"] < 4096
    lines = [json.loads(x) for x in (tiny_run / "train_log.jsonl").read_text().splitlines()]
    assert {x["split"] for x in lines} == {"train", "valid"}
    assert all("loss" in x and "samples_per_s" in x for x in lines if x["split"] == "train")


@pytest.mark.parametrize("sparse_embeddings", [False, True])
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
    tiny_world, tmp_path, sparse_embeddings
):
    config = tiny_config(tiny_world, epochs=2, checkpoint_every=3,
                         sparse_embeddings=sparse_embeddings)  # fmt: skip
    whole = Trainer(config, tmp_path / "whole").fit()
    with pytest.raises(StopTraining):
        # killed at step 8 of the first epoch: the last checkpoint is from step 6
        Trainer(config, tmp_path / "killed", stop_after=8).fit()
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["state"]["step"] == 6
    resumed = Trainer(config, tmp_path / "killed", resume=True).fit()
    assert resumed["best_valid"] == whole["best_valid"]
    assert resumed["steps"] == whole["steps"]
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_empty_run_directory_needs_resume_and_the_same_config(tiny_world, tiny_run):
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(tiny_world), tiny_run)
    with pytest.raises(ValueError, match="config differs"):
        Trainer(tiny_config(tiny_world, epochs=5), tiny_run, resume=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: dnn\ntrain: {epochz: 2}\n", r"train.epochz: unknown key; did you mean epochs"),
        ("model: dnn\ntrain: {epochs: two}\n", r"train.epochs: Input should be a valid integer"),
        ("model: dnn\nextra: 1\n", r"c.yaml: extra: unknown key; known: data, features"),
        ("train: {epochs: 1}\n", "c.yaml: model: Field required"),
    ],
)
def test_bad_configs_fail_before_training_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_experiment(path)


def test_unknown_model_or_parameter_is_refused_before_a_trainer_exists(tiny_world):
    config = tiny_config(tiny_world)
    with pytest.raises(ValueError, match="unknown model 'gbdt'"):
        config.model = "gbdt"
    with pytest.raises(ValueError, match=r"model_params.layers\s+unknown key"):
        config.model_params = {"layers": 3}
    assert config.model == "dnn" and config.model_params == {"hidden": [32, 16]}


def test_overrides_and_saved_config_round_trip(tmp_path, tiny_run):
    path = tmp_path / "c.yaml"
    path.write_text("model: dnn\n")
    config = load_experiment(path, ["train.epochs=3", "model_params={hidden: [8]}",
                                    "train.lr_embedding=1e-3"])  # fmt: skip
    assert config.train.epochs == 3 and config.model_params == {"hidden": [8]}
    assert config.train.lr_embedding == 0.001
    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert saved["model"] == "dnn" and saved["train"]["epochs"] == 1


def test_learning_rates_are_grouped_by_parameter_kind(tiny_world, tmp_path):
    config = tiny_config(tiny_world, lr_embedding=0.05, lr_dense=0.002, lr_position=0.3)
    trainer = Trainer(config, tmp_path / "r")
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {"position": 0.3, "embedding": 0.05, "dense": 0.002}
    position = next(g for g in trainer.optimizer.param_groups if g["name"] == "position")
    assert position["params"] == [trainer.model.position_bias.weight]
    assert position["weight_decay"] == 0.0
    sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in trainer.optimizer.param_groups}
    assert sizes["embedding"] > sizes["dense"]


def test_a_resumed_run_reuses_the_cached_features(tiny_world, tmp_path, monkeypatch):
    from prectr.data.features import FeatureEncoder

    config = tiny_config(tiny_world)
    first = Trainer(config, tmp_path / "r")
    assert (tmp_path / "r" / "data" / "features.npz").is_file()

    def no_encoding(*args, **kwargs):
        raise AssertionError("a resumed run must not encode the log (and its histories) again")

    monkeypatch.setattr(FeatureEncoder, "encode", no_encoding)
    again = Trainer(config, tmp_path / "r", resume=True)
    for level in ("item", "request"):
        for name, values in getattr(first.data.encoded, level).items():
            assert (getattr(again.data.encoded, level)[name] == values).all(), name


def prectr_config(tiny_world, data: dict | None = None, **train):
    config = tiny_config(tiny_world, data, relevance_epochs=1, **train)
    config.model, config.name = "prectr_v1", "tiny_prectr"
    config.model_params = {"hidden": [32, 16], "consistency": "kl"}
    config.features.relevance_context = True
    return config


def test_stage_one_fits_the_relevance_module_alone_then_anchors_the_kl(tiny_world, tmp_path):
    config = prectr_config(tiny_world, epochs=0)
    trainer = Trainer(config, tmp_path / "r")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("rsl.", "reference.")) for k in changed), changed
    for k, v in trainer.model.rsl.state_dict().items():  # the KL anchor is the stage-1 RSL
        assert torch.equal(trainer.model.reference.state_dict()[k], v)
    lines = [json.loads(x) for x in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert {x["split"] for x in lines} == {"relevance"}


@pytest.mark.slow  # V2's unexposed negatives: batches of every candidate, about 9 s
def test_a_run_killed_in_stage_one_resumes_exactly(tiny_world, tmp_path):
    # large batches: a few steps of each stage, the kill still in stage one
    config = prectr_config(tiny_world, {"batch_size": 1024}, epochs=1, checkpoint_every=2)
    config.model = "prectr_v2"  # random unexposed partners too
    whole = Trainer(config, tmp_path / "whole").fit()
    with pytest.raises(StopTraining):
        Trainer(config, tmp_path / "killed", stop_after=3).fit()
    state = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["state"]
    assert state["epochs"].get("relevance", 0) == 0 and state["step"] == 2
    resumed = Trainer(config, tmp_path / "killed", resume=True).fit()
    assert resumed["best_valid"] == whole["best_valid"]
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage_one_needs_a_relevance_module_and_kl_needs_stage_one(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="no relevance module"):
        Trainer(tiny_config(tiny_world, relevance_epochs=1), tmp_path / "a")
    config = prectr_config(tiny_world)
    config.train.relevance_epochs = 0
    with pytest.raises(ValueError, match="relevance_epochs >= 1"):
        Trainer(config, tmp_path / "b")


def test_a_calibrated_run_fits_each_checkpoint_on_the_validation_day(tiny_world, tmp_path):
    from prectr.train.run import load_trained

    config = tiny_config(tiny_world, calibration="platt", reference_position=2)
    trainer = Trainer(config, tmp_path / "r")
    trainer.fit()
    checkpoints = tmp_path / "r" / "checkpoints"
    for name in ("best", "last"):
        saved = json.loads((checkpoints / f"{name}.calibration.json").read_text())
        assert saved["kind"] == "platt" and saved["a"] > 0
    run = load_trained(tmp_path / "r")
    best = json.loads((checkpoints / "best.calibration.json").read_text())
    assert run.model.calibrator.to_dict() == pytest.approx(best)
    assert run.model.reference_position == 2
    last = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(v, last[k]) for k, v in trainer.model.state_dict().items())


def test_a_trained_run_is_calibrated_afterwards_as_training_would_have(tiny_world, tmp_path):
    from prectr.train.run import load_trained
    from prectr.train.trainer import calibrate_run

    trained = tmp_path / "trained"
    Trainer(tiny_config(tiny_world, calibration="platt"), trained).fit()
    later = tmp_path / "later"
    Trainer(tiny_config(tiny_world, calibration="none"), later).fit()
    assert not (later / "checkpoints" / "best.calibration.json").exists()
    calibrate_run(later, "platt")
    assert "calibration: platt" in (later / "config.yaml").read_text()
    for name in ("best", "last"):
        fitted = (later / "checkpoints" / f"{name}.calibration.json").read_text()
        assert json.loads(fitted) == json.loads(
            (trained / "checkpoints" / f"{name}.calibration.json").read_text()
        )
    assert load_trained(later).model.calibrator.kind == "platt"
    calibrate_run(later, "none")  # removes the fit again
    assert not (later / "checkpoints" / "best.calibration.json").exists()
    # a run saved before data.batch_counts existed batched by rows, and keeps saying so
    saved = later / "config.yaml"
    saved.write_text(saved.read_text().replace("  batch_counts: exposed\n", ""))
    calibrate_run(later, "platt")
    assert "batch_counts: rows" in saved.read_text()
    with pytest.raises(ValueError, match=r"train\.calibration: Input should be .*\(got 'plat'\)"):
        calibrate_run(later, "plat")


def test_a_fresh_run_starts_at_the_training_click_rate(tiny_world, tmp_path):
    import math

    import numpy as np
    import pyarrow.compute as pc

    from prectr.data.schema import read_log
    from prectr.data.shards import time_split

    log = read_log(tiny_world)
    train = time_split(log.requests, 1, 1)["train"]
    rows = pc.is_in(log.impressions["request_id"],
                    value_set=log.requests["request_id"].take(train))  # fmt: skip
    clicks = log.impressions.filter(rows)["click"].to_numpy(zero_copy_only=False)
    exposed = clicks[~np.isnan(clicks)]
    rate = (exposed.sum() + 1) / (exposed.size + 2)
    trainer = Trainer(tiny_config(tiny_world), tmp_path / "r")
    bias = trainer.model.position_bias.weight.detach().numpy()
    np.testing.assert_allclose(bias, math.log(rate / (1 - rate)), rtol=1e-6)


def test_one_epoch_of_a_few_large_steps_ranks_above_random(tiny_world, tmp_path):
    """An epoch of `tiny` (the world's split) at the default batch size is 8 steps: started
    from a zero bias the model spent them pulling its logits down to the base rate and ranked
    below random (validation AUC 0.45). It must beat the same model untrained."""
    config = tiny_config(tiny_world, {"batch_size": 2048, "test_days": 3})
    trainer = Trainer(config, tmp_path / "r")
    untrained = trainer.validate()["auc"]
    result = trainer.fit()
    assert result["steps"] == 8 and result["best_valid"]["auc"] >= untrained + 0.05


def test_early_stopping_ends_patience_epochs_after_the_best_and_keeps_the_best_weights(
    tiny_world, tmp_path
):
    """At the default rates a DNN overfits `tiny` in two epochs and validation logloss turns
    up: the run stops ``patience`` validations after its best one, and ``best.pt`` holds
    the weights that scored it (recomputed from the checkpoint, not read from the log)."""
    from prectr.train.data import load_prepared
    from prectr.train.run import load_trained

    config = tiny_config(tiny_world, {"batch_size": 1024}, epochs=12, patience=2,
                         early_stopping_metric="logloss",
                         calibration="none")  # fmt: skip
    run = tmp_path / "r"
    result = Trainer(config, run).fit()
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [x["logloss"] for x in lines if x["split"] == "valid"]
    best = losses.index(min(losses))  # the first of equal values stays the best
    assert len(losses) == best + 1 + 2 < 12, losses  # stopped, two epochs after the best
    assert result["epochs"] == len(losses) and result["best_valid"]["epoch"] == best
    assert result["best_valid"]["logloss"] == losses[best]
    trained = load_trained(run, checkpoint="best")
    data = load_prepared(run)
    p = predict(trained.model, data.stream("valid", trained.config, shuffle=False).epoch())
    exposed = p["exposed"]
    assert logloss(p["click"][exposed], p["shown"][exposed]) == pytest.approx(losses[best], 1e-9)
    last = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    kept = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    assert not all(torch.equal(last[k], kept[k]) for k in last)


@pytest.mark.parametrize("position_bias", [False, True])
def test_a_model_trained_without_position_bias_scores_the_same_at_every_position(
    tiny_world, tmp_path, position_bias
):
    """``train.position_bias: false``: the per-rank bias stays at its start (the training click
    rate's log-odds, one value for every rank), so a row's click probability is the same
    whatever position it was shown at; trained with it, ranks differ."""
    config = tiny_config(tiny_world, position_bias=position_bias, calibration="none")
    trainer = Trainer(config, tmp_path / "r")
    start = trainer.model.position_bias.weight.detach().clone()
    trainer.fit()
    bias = trainer.model.position_bias.weight.detach()
    assert torch.equal(bias, start) != position_bias
    stream = trainer.data.stream("valid", config, shuffle=False)
    p = predict(trainer.model, stream.epoch())
    exposed = p["exposed"]
    assert np.array_equal(p["shown"][exposed], p["score"][exposed]) != position_bias


def test_the_relevance_stage_counts_graded_rows_whatever_the_click_stage_counts(
    tiny_world, tmp_path
):
    """Stage 1 trains on graded pairs, most of them unexposed candidates: counted in exposed
    impressions its batches would hold many times ``batch_size`` rows and the stage take a
    fraction of its steps, so it counts rows under either ``data.batch_counts``."""
    steps = {}
    for counts in ("rows", "exposed"):
        config = tiny_config(tiny_world, {"batch_size": 256, "batch_counts": counts},
                             relevance_epochs=1, epochs=0)  # fmt: skip
        config.model, config.name = "prectr_v1", f"tiny_v1_{counts}"
        config.model_params = {"hidden": [32, 16]}
        config.features.relevance_context = True
        trainer = Trainer(config, tmp_path / counts)
        graded = trainer.data.stream("train", config, shuffle=False, rows="labelled",
                                     counts="rows")  # fmt: skip
        exposed = trainer.data.stream("train", config, shuffle=False, rows="labelled",
                                      counts="exposed")  # fmt: skip
        assert len(list(exposed.epoch())) < len(list(graded.epoch())) / 2  # the difference
        steps[counts] = trainer.fit()["steps"]
        trainer.close()
        assert steps[counts] == len(list(graded.epoch()))
    assert steps["rows"] == steps["exposed"]


@pytest.mark.slow
def test_counting_exposed_impressions_gives_both_kinds_of_negatives_the_same_steps(
    tiny_world, tmp_path
):
    """A V2 batch with unexposed negatives holds every candidate: counted in rows it holds
    fewer requests, and an epoch takes more steps than with synthetic negatives; counted in
    exposed impressions (``data.batch_counts: exposed``) both take the same steps."""
    steps = {}
    for counts in ("rows", "exposed"):
        for negatives in ("synthetic", "unexposed"):
            config = tiny_config(tiny_world, {"batch_size": 512, "batch_counts": counts},
                                 relevance_epochs=0)  # fmt: skip
            config.model, config.name = "prectr_v2", f"tiny_{negatives}_{counts}"
            config.model_params = {"hidden": [32, 16], "debias_negatives": negatives}
            config.features.relevance_context = True
            trainer = Trainer(config, tmp_path / f"{negatives}-{counts}")
            steps[negatives, counts] = trainer.fit()["steps"]
            trainer.close()
    assert steps["unexposed", "rows"] > 2 * steps["synthetic", "rows"]
    assert steps["unexposed", "exposed"] == steps["synthetic", "exposed"]


def test_validating_every_few_steps_picks_the_best_checkpoint_between_epoch_ends(
    tiny_world, tmp_path
):
    """``train.validate_every``: the click stage validates every few steps and after its last,
    not at epoch ends, and the best of those validations is the run's best."""
    config = tiny_config(tiny_world, {"batch_size": 2048, "test_days": 3}, epochs=2,
                         validate_every=3, patience=0, calibration="none")  # fmt: skip
    run = tmp_path / "r"
    result = Trainer(config, run).fit()
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    valid = [x for x in lines if x["split"] == "valid"]
    assert [x["step"] for x in valid] == [3, 6, 9, 12, 15, 16]  # two epochs of 8 steps
    best = max(valid, key=lambda x: x["auc"])
    assert result["best_valid"]["step"] == best["step"]


def test_a_run_records_the_threads_it_trained_on(tiny_world, tmp_path):
    before = torch.get_num_threads()
    try:
        config = tiny_config(tiny_world, {"batch_size": 2048, "test_days": 3}, threads=1,
                             calibration="none")  # fmt: skip
        Trainer(config, tmp_path / "r").fit()
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["threads"] == 1


def test_a_checkpoint_that_does_not_fit_its_config_is_refused_naming_both(tiny_run, tmp_path):
    """A run whose config builds another model than its checkpoint holds (a default changed
    since it was trained) is refused with a message naming the checkpoint and the config, when
    it is loaded and when it is resumed."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model_params"]["hidden"] = [8]  # the checkpoint's network has [32, 16]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"best\.pt: its parameters do not fit .*config\.yaml"):
        load_trained(run)
    changed = load_experiment(run / "config.yaml")  # resumed as its config.yaml says today
    with pytest.raises(ValueError, match=r"last\.pt: its parameters do not fit"):
        Trainer(changed, run, resume=True)
