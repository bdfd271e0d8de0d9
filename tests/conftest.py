from pathlib import Path

import pytest

from prectr.data.simulate import load_config, simulate


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset, seed 0, generated once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    simulate(load_config("tiny"), out)
    return out


def tiny_config(tiny_world: Path, **train):
    """A small DNN experiment on the tiny world."""
    from prectr.config import experiment_from_dict

    return experiment_from_dict(
        {
            "model": "dnn",
            "name": "tiny_dnn",
            "model_params": {"hidden": [32, 16]},
            "data": {"log": str(tiny_world), "batch_size": 256},
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
