"""benchmarks/throughput.py: config labels, and which config each ``--set`` override reaches."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import throughput


def test_a_prefixed_override_reaches_its_config_alone_and_a_plain_one_every_config():
    configs = throughput.labelled(
        ["configs/dnn_small.yaml", "configs/prectr_v2_student_small.yaml"]
    )
    assert configs == {
        "dnn_small": Path("configs/dnn_small.yaml"),
        "prectr_v2_student_small": Path("configs/prectr_v2_student_small.yaml"),
    }
    overrides = throughput.config_overrides(
        ["train.seed=1", "prectr_v2_student_small:model_params.student=/s:t", "data.log=a:b"],
        list(configs),
    )
    assert overrides == {
        "dnn_small": ["train.seed=1", "data.log=a:b"],
        "prectr_v2_student_small": ["train.seed=1", "model_params.student=/s:t", "data.log=a:b"],
    }
    with pytest.raises(SystemExit, match="no config 'din_small' among dnn_small"):
        throughput.config_overrides(["din_small:train.seed=1"], ["dnn_small"])


def test_a_labelled_config_runs_one_file_twice_with_its_own_overrides():
    configs = throughput.labelled(["configs/dnn_small.yaml", "configs/dnn_small.yaml@loop"])
    assert configs == {"dnn_small": Path("configs/dnn_small.yaml"),
                       "loop": Path("configs/dnn_small.yaml")}  # fmt: skip
    overrides = throughput.config_overrides(["loop:train.fused_optimizer=false"], list(configs))
    assert overrides == {"dnn_small": [], "loop": ["train.fused_optimizer=false"]}
    with pytest.raises(SystemExit, match="label 'dnn_small' is taken"):
        throughput.labelled(["configs/dnn_small.yaml", "configs/dnn_small.yaml"])


def test_each_round_is_read_against_the_first_configs_turn_of_the_same_round():
    assert throughput.round_ratios([10.0, 30.0], [100.0, 200.0]) == [0.1, 0.15]
    with pytest.raises(ValueError):
        throughput.round_ratios([10.0], [100.0, 200.0])
