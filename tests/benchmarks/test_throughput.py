"""benchmarks/throughput.py: which config each ``--set`` override reaches."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import throughput


def test_a_prefixed_override_reaches_its_config_alone_and_a_plain_one_every_config():
    dnn, student = Path("configs/dnn_small.yaml"), Path("configs/prectr_v2_student_small.yaml")
    overrides = throughput.config_overrides(
        ["train.seed=1", "prectr_v2_student_small:model_params.student=/s:t", "data.log=a:b"],
        [dnn, student],
    )
    assert overrides == {
        dnn: ["train.seed=1", "data.log=a:b"],
        student: ["train.seed=1", "model_params.student=/s:t", "data.log=a:b"],
    }
    with pytest.raises(SystemExit, match="no config 'din_small' among dnn_small"):
        throughput.config_overrides(["din_small:train.seed=1"], [dnn])
