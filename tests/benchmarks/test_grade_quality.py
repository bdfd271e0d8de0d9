"""benchmarks/grade_quality.py: the grade figures by hand, and runs paired end to end."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import grade_quality

from prectr.data.schema import read_log
from prectr.evaluation.context import EvaluationContext
from prectr.evaluation.truth import LOG_COLUMNS, open_truth


def test_the_grade_figures_by_hand_leave_unknown_grades_out_and_follow_the_weights():
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1],
                              [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.5, 0.5]])  # fmt: skip
    grade, request = np.array([0, 1, 3, -1]), np.array([0, 0, 1, 1])
    stats = grade_quality.grade_statistics(probabilities, grade, request)
    # no candidate of grade 2: no accuracy@2
    assert set(stats) == {"accuracy", "log_loss", "expected_grade_error", "accuracy@0",
                          "accuracy@1", "accuracy@3"}  # fmt: skip
    every = np.ones((1, 2))
    assert stats["accuracy"](every)[0] == pytest.approx(1 / 3)  # a tie reads the lower grade
    assert stats["log_loss"](every)[0] == pytest.approx(-np.log([0.7, 0.2, 0.25]).mean())
    assert stats["expected_grade_error"](every)[0] == pytest.approx((0.6 + 0.7 + 1.5) / 3)
    assert [stats[f"accuracy@{g}"](every)[0] for g in (0, 1, 3)] == [1.0, 0.0, 0.0]
    assert stats["accuracy"](np.array([[2.0, 0.0]]))[0] == pytest.approx(1 / 2)  # request 0


def with_grades(run: Path, probabilities: np.ndarray) -> Path:
    """``run``'s test scores with grade columns ``probabilities`` (rows in the scores' order)."""
    path = run / "scores.parquet"
    table = pq.read_table(path)
    for g in range(4):
        table = table.append_column(f"grade_{g}", pa.array(probabilities[:, g], pa.float32()))
    pq.write_table(table, path)
    return run


def test_runs_are_paired_with_the_first_that_grades(tiny_world, tiny_run, tmp_path, monkeypatch):
    from prectr.evaluation.run import evaluate_run

    evaluated = Path(shutil.copytree(tiny_run, tmp_path / "dnn"))
    evaluate_run(evaluated, tiny_world, n_resamples=10)
    log = read_log(tiny_world, columns=LOG_COLUMNS, validate_log=False)
    context = EvaluationContext.build(open_truth(log, tiny_world), 1, 1, "test")
    scores = pq.read_table(evaluated / "scores.parquet")
    keys = {
        (r, i): n
        for n, (r, i) in enumerate(
            zip(context.rows.request_ids[context.rows.request], context.rows.item_id, strict=True)
        )
    }
    order = [keys[r, i] for r, i in zip(scores["request_id"].to_pylist(),
                                        scores["item_id"].to_pylist(), strict=True)]  # fmt: skip
    true = context.rows.grade[order]
    perfect = with_grades(Path(shutil.copytree(evaluated, tmp_path / "perfect")),
                          np.eye(4)[true])  # fmt: skip
    blind = with_grades(Path(shutil.copytree(evaluated, tmp_path / "blind")),
                        np.full((len(true), 4), 0.25))  # fmt: skip
    out = tmp_path / "grades.json"
    monkeypatch.setattr(sys, "argv", ["grade_quality.py", "--world", str(tiny_world),
                                      "--resamples", "20", "--out", str(out), str(evaluated),
                                      str(perfect), str(blind)])  # fmt: skip
    grade_quality.main()
    record = json.loads(out.read_text())
    results = {e["run"]: e for e in record["results"]}
    assert set(results) == {"perfect", "blind"}  # the DNN has no grades
    assert results["perfect"]["value"]["accuracy"] == 1.0
    assert results["perfect"]["value"]["log_loss"] == pytest.approx(0.0, abs=1e-6)
    assert "minus perfect" not in results["perfect"]
    blind_accuracy = results["blind"]["value"]["accuracy"]
    assert blind_accuracy == pytest.approx(np.mean(true == 0))  # uniform: grade 0 read
    difference = results["blind"]["minus perfect"]["accuracy"]
    assert difference["diff"] == pytest.approx(blind_accuracy - 1.0)
    assert difference["hi"] < 0
    assert record["graded_candidates"] == len(true)
