import pytest

from prectr.serve.export import ScoringGraph, export, run_exported
from prectr.serve.ranker import Ranker
from tests.serve.test_ranker import request_of


@pytest.fixture(scope="module")
def batches(prectr_run, tiny_world):
    from prectr.data.schema import read_log

    ranker = Ranker(prectr_run, history=tiny_world)
    log = read_log(tiny_world)
    ids = log.requests["request_id"].to_pylist()
    requests = [request_of(log, ids[-1]), request_of(log, ids[0])]
    requests[1].candidates = requests[1].candidates[:7]  # another batch size
    return ranker, [ranker.batch(r) for r in requests]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trips_within_1e_5_of_eager(batches, tmp_path, fmt):
    ranker, bs = batches
    path = tmp_path / f"model.{fmt}"
    worst = export(ranker.model, bs, path, fmt, shared=ranker.shared)
    assert path.is_file() and worst <= 1e-5
    outputs = run_exported(path, fmt, ScoringGraph(ranker.model, bs[0], ranker.shared), bs[1])
    assert [o.shape[0] for o in outputs] == [7, 7, 7]  # score, grades, incentive


def test_an_export_that_disagrees_is_not_left_behind(batches, tmp_path):
    ranker, bs = batches
    with pytest.raises(ValueError, match="differs from eager"):
        export(ranker.model, bs, tmp_path / "m.pt", "torchscript", atol=-1.0)
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(ValueError, match="format 'tflite'"):
        export(ranker.model, bs, tmp_path / "m.x", "tflite")
