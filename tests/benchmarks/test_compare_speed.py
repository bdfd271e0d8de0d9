"""benchmarks/compare_speed.py: `prectr compare` timed against another prectr tree."""

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import compare_speed

ROOT = Path(__file__).resolve().parents[2]


def test_a_tree_timed_against_itself_computes_the_same_comparison(
    two_day_runs, tiny_world, tmp_path, monkeypatch
):
    from prectr.evaluation.run import evaluate_run

    runs = [Path(shutil.copytree(run, tmp_path / run.name)) for run in two_day_runs]
    for run in runs:
        evaluate_run(run, tiny_world, n_resamples=10)
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["compare_speed.py", "--baseline", str(ROOT), "--runs",
                                      *map(str, runs), "--world", str(tiny_world),
                                      "--bootstrap", "20", "--rounds", "1", "--work",
                                      str(tmp_path / "work"), "--out", str(out)])  # fmt: skip
    compare_speed.main()
    record = json.loads(out.read_text())
    assert record["outputs_identical"] is True
    assert all(len(record["seconds"][t]["wall"]) == 1 for t in ("baseline", "this"))
    assert record["ratio_this_over_baseline"]["wall"] > 0
    monkeypatch.setattr(sys, "argv", ["compare_speed.py", "--baseline", str(tmp_path), "--runs",
                                      *map(str, runs), "--world", str(tiny_world)])  # fmt: skip
    with pytest.raises(SystemExit, match="no prectr package"):
        compare_speed.main()


def test_outputs_that_differ_in_one_resample_are_not_the_same(tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"sections": {"all": {"auc": {"diff": 0.01}}}}))
    draws = {name: tmp_path / f"{name}.parquet" for name in ("a", "b")}
    pq.write_table(pa.table({"all/auc": [0.01, 0.02]}), draws["a"])
    pq.write_table(pa.table({"all/auc": [0.01, 0.03]}), draws["b"])
    assert compare_speed.same_outputs((summary, draws["a"]), (summary, draws["a"]))
    assert not compare_speed.same_outputs((summary, draws["a"]), (summary, draws["b"]))
