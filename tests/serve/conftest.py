from pathlib import Path

import pytest

from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def prectr_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRECTR-V2 trained for one epoch on the tiny world, calibrated (isotonic, the calibrator
    with the larger graph) and evaluated on its test day."""
    from prectr.evaluation import evaluate_run
    from prectr.train.trainer import Trainer

    config = tiny_config(tiny_world, relevance_epochs=1, calibration="isotonic")
    config.model, config.name = "prectr_v2", "tiny_prectr_v2"
    config.model_params = {"hidden": [32, 16]}
    config.features.relevance_context = True
    run = tmp_path_factory.mktemp("runs") / "prectr_v2"
    Trainer(config, run).fit()
    evaluate_run(run, tiny_world)
    return run
