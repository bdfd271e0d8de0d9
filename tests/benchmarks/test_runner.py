"""benchmarks/runner.py: a world under runs/worlds is reused only if the flags would make it."""

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import runner

from prectr.data.simulate import load_config


def flags(preset: str = "tiny", seed: int = 0, *knobs: str) -> argparse.Namespace:
    return argparse.Namespace(preset=preset, world_seed=seed, world_set=list(knobs),
                              world_name=None)  # fmt: skip


def test_a_world_is_reused_only_when_made_with_the_preset_seed_and_knobs_asked(tmp_path):
    world = tmp_path / "worlds" / "tiny-s0"
    world.mkdir(parents=True)
    made = asdict(load_config("tiny", overrides={"valid_days": 2}))
    (world / "world.json").write_text(json.dumps({"config": made}))
    commands: list[str] = []
    assert runner.world_dir(flags("tiny", 0, "valid_days=2"), commands, tmp_path) == world
    assert commands[-1].endswith("# (reused)")
    with pytest.raises(SystemExit, match="valid_days"):
        runner.world_dir(flags("tiny", 0, "valid_days=3"), commands, tmp_path)
    runner.check_reused_world(world, flags("tiny", 0, "valid_days=2", f"eta={int(made['eta'])}"))
    for asked, named in (
        (flags("tiny", 0), "valid_days 2 (asked: 1)"),
        (flags("tiny", 1, "valid_days=2"), "seed 0 (asked: 1)"),
        (flags("bench", 0, "valid_days=2"), "n_items 6000 (asked: 60000)"),
    ):
        with pytest.raises(SystemExit, match=re.escape(named)):
            runner.check_reused_world(world, asked)


def test_a_run_is_reused_only_while_its_config_gives_the_settings_it_was_trained_with(tmp_path):
    """An evaluated run is reused, or an interrupted one resumed, only if its saved settings
    are what its config (through its base) and the overrides give now, at every key both
    hold; its name and log are the benchmark's to set."""
    from prectr.config import load_experiment

    base = tmp_path / "base.yaml"
    base.write_text("model: dnn\nmodel_params: {hidden: [8]}\ntrain: {epochs: 3}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nname: child\ntrain: {lr_dense: 0.5}\n")
    run = tmp_path / "runs" / "child-s0"
    run.mkdir(parents=True)
    saved = load_experiment(child, ["train.seed=0", "train.epochs=1"]).to_dict()
    saved["name"], saved["data"]["log"] = "renamed", "/elsewhere/world"
    del saved["train"]["patience"]  # a setting the library added after the run
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "evaluation.json").write_text("{}")
    commands: list[str] = []
    assert runner.training_job(child, tmp_path, run, 0, ["train.epochs=1"], commands) is None
    assert commands[0].endswith("# (reused)")
    base.write_text("model: dnn\nmodel_params: {hidden: [16]}\ntrain: {epochs: 3}\n")
    with pytest.raises(SystemExit, match=re.escape("model_params.hidden: [8] then, [16] now")):
        runner.training_job(child, tmp_path, run, 0, ["train.epochs=1"], commands)
    (run / "evaluation.json").unlink()  # interrupted: resumed under the same check
    with pytest.raises(SystemExit, match=re.escape("train.seed: 0 then, 1 now")):
        runner.training_job(child, tmp_path, run, 1, ["train.epochs=1"], commands)
