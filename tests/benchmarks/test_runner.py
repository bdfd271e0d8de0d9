"""benchmarks/runner.py: a world under runs/worlds is reused only if the flags would make it."""

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

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
