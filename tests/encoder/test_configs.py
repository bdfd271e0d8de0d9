from pathlib import Path

import pytest

from prectr.config import load_experiment

CONFIGS = Path(__file__).parents[2] / "configs"
TEXT_CONFIGS = sorted(CONFIGS.glob("*_student*.yaml")) + sorted(CONFIGS.glob("*_minilm*.yaml"))


@pytest.mark.parametrize("world", ["bench", "small"])
def test_the_four_text_encoder_configs_exist(world: str) -> None:
    names = {p.stem for p in TEXT_CONFIGS}
    assert {f"prectr_v2_student_{world}", f"prectr_v2_student_frozen_{world}",
            f"prectr_v2_minilm_{world}", f"prectr_v1_minilm_{world}"} <= names  # fmt: skip


@pytest.mark.parametrize("path", TEXT_CONFIGS, ids=lambda p: p.stem)
def test_features_and_model_name_the_same_encoder(path: Path) -> None:
    config = load_experiment(path)
    params = config.model_params
    if params["text_encoder"] == "student":
        assert config.features.student == params["student"]
    else:
        assert params["text_encoder"] == "cache"
        assert config.features.text_cache == params["text_cache"]
