"""benchmarks/peer_fuxictr.py without FuxiCTR: the rows both libraries are scored on, the
summary over seeds, and a FuxiCTR side that needs nothing of prectr."""

import ast
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from peer.sides import CATEGORICAL, NUMERIC, export_csv, prectr_test_scores, summarise

from prectr.data.schema import read_log
from prectr.data.shards import time_split

RUNNER = Path(__file__).resolve().parents[2] / "benchmarks" / "peer" / "fuxictr_runner.py"


def test_the_export_and_prectrs_scores_cover_the_same_exposed_test_impressions(
    tiny_world, tiny_run, tmp_path
):
    counts = export_csv(tiny_world, tiny_run / "features", tmp_path)
    log = read_log(tiny_world)
    split = time_split(log.requests)
    imp = log.impressions
    exposed = pc.is_valid(imp["click"]).to_numpy(zero_copy_only=False)
    request_row = {r: i for i, r in enumerate(log.requests["request_id"].to_pylist())}
    rows = np.array([request_row[r] for r in imp["request_id"].to_pylist()])
    for name, requests in split.items():
        table = pacsv.read_csv(tmp_path / f"{name}.csv")
        assert table.column_names == [*CATEGORICAL, *NUMERIC, "click"]
        assert counts[name] == table.num_rows == int((exposed & np.isin(rows, requests)).sum())
    labels, scores = prectr_test_scores(tiny_run, tiny_world)
    test = pacsv.read_csv(tmp_path / "test.csv")
    assert labels.size == scores.size == counts["test"]
    assert labels.sum() == pc.sum(test["click"]).as_py() > 0


def test_the_summary_pairs_each_seed_and_compares_the_median_speeds():
    def run(library, seed, auc, speed):
        return {"library": library, "model": "dnn", "seed": seed, "test_auc": auc,
                "test_logloss": 0.3, "train_samples_per_s": speed}  # fmt: skip

    runs = [run("prectr", 0, 0.700, 300.0), run("FuxiCTR", 0, 0.699, 100.0),
            run("prectr", 1, 0.690, 100.0), run("FuxiCTR", 1, 0.694, 200.0),
            run("prectr", 2, 0.710, 200.0), run("FuxiCTR", 2, 0.701, 400.0)]  # fmt: skip
    table, verdicts = summarise(runs, ["dnn"])
    ours, peer = table
    assert ours["test_auc"] == pytest.approx(0.700) and peer["test_auc"] == pytest.approx(0.698)
    assert ours["test_auc_sd"] == pytest.approx(0.01)
    assert ours["train_samples_per_s"] == 200.0 and peer["train_samples_per_s"] == 200.0
    v = verdicts["dnn"]
    # per-seed differences +0.001, -0.004, +0.009: mean +0.002, s.e. sd/sqrt(3)
    assert v["auc_delta"] == pytest.approx(0.002)
    assert v["auc_delta_se"] == pytest.approx(np.std([0.001, -0.004, 0.009], ddof=1) / 3**0.5)
    assert v["speed_ratio"] == 1.0 and v["speed_ratio_at_least_1"]


def test_the_fuxictr_side_imports_nothing_of_prectr_or_the_benchmarks():
    tree = ast.parse(RUNNER.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }  # fmt: skip
    assert imported == {"fuxictr", "json", "logging", "numpy", "os", "pathlib", "pyarrow",
                        "ray", "sys", "time", "torch"}  # fmt: skip
