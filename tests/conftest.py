import os
import sys
from pathlib import Path

import pytest

from prectr.data.simulate import load_config, simulate
from prectr.io import CACHE_ENV


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """What prectr derives once and caches (a converted GGUF model) goes under the session's
    temporary directory, never the user's cache."""
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("prectr-cache"))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset, seed 0, generated once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    simulate(load_config("tiny"), out)
    return out


def tiny_config(tiny_world: Path, data: dict | None = None, **train):
    """A small DNN experiment on the tiny world (``data``: overrides of the data section)."""
    from prectr.config import experiment_from_dict

    return experiment_from_dict(
        {
            "model": "dnn",
            "name": "tiny_dnn",
            "model_params": {"hidden": [32, 16]},
            "data": {"log": str(tiny_world), "batch_size": 256, **(data or {})},
            "train": {"epochs": 1, "log_every": 5, "checkpoint_every": 10, **train},
        }
    )


@pytest.fixture(scope="session")
def tiny_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DNN trained for one epoch on the tiny world."""
    from prectr.train.trainer import Trainer

    run = tmp_path_factory.mktemp("runs") / "dnn"
    Trainer(tiny_config(tiny_world), run).fit()
    return run


@pytest.fixture(scope="session")
def two_day_runs(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two DNNs (training seeds 0 and 1) tested on the tiny world's last two days."""
    from prectr.train.trainer import Trainer

    root = tmp_path_factory.mktemp("two_day_runs")
    runs = (root / "a", root / "b")
    for seed, run in enumerate(runs):
        Trainer(tiny_config(tiny_world, {"test_days": 2}, seed=seed), run).fit()
    return runs


def leave_spawned_process() -> None:
    """End a spawned gloo test process whose work is done, written and whose group is
    destroyed, without the interpreter's teardown: there a two-process gloo run still aborts
    now and then after all its work ("terminate called without an active exception", SIGABRT:
    rarer since 6ae70a0's barrier, still failing a fresh-clone CI run in each of two sessions).
    The exit path a user runs is tested under torchrun (tests/train/test_distributed.py)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
