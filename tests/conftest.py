from pathlib import Path

import pytest

from prectr.data.simulate import load_config, simulate


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset, seed 0, generated once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    simulate(load_config("tiny"), out)
    return out
