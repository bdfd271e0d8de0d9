"""benchmarks/per_day.py and benchmarks/aa.py: a difference by day, and the A/A pairs."""

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import aa
import per_day
import quality


def fake_run(root: Path, name: str, valid: list[str], test: list[str]) -> Path:
    """A run evaluated on the ``valid`` and ``test`` days (what per_day reads of it)."""
    run = root / name
    run.mkdir(parents=True)
    for file, days in (("evaluation_valid.json", valid), ("evaluation.json", test)):
        (run / file).write_text(json.dumps({"per_day": {day: {"auc": 0.7} for day in days}}))
    (run / "config.yaml").write_text("model: dnn\n")
    return run


def test_a_pair_is_compared_on_each_day_of_both_splits(tmp_path):
    for seed in (0, 1):
        for name in ("a", "b"):
            fake_run(tmp_path, f"{name}-s{seed}", ["2026-01-01"], ["2026-01-03", "2026-01-02"])
    days = per_day.planned_days(tmp_path, "a", "b", [0, 1])
    assert days == {"valid": ["2026-01-01"], "test": ["2026-01-02", "2026-01-03"]}
    args = argparse.Namespace(bootstrap=10, bootstrap_seed=0)
    reference, other = {"run": tmp_path / "a-s0"}, {"run": tmp_path / "b-s0"}
    cmd, summary, _, fresh = quality.comparison(reference, other, tmp_path, args, "valid",
                                                "2026-01-01")  # fmt: skip
    assert cmd[cmd.index("--split") + 1] == "valid" and cmd[cmd.index("--day") + 1] == "2026-01-01"
    assert summary.name == "b-s0-vs-a-s0_valid_2026-01-01.json" and not fresh
    cmd, summary, _, _ = quality.comparison(reference, other, tmp_path, args)  # the test split
    assert "--split" not in cmd and "--day" not in cmd and summary.name == "b-s0-vs-a-s0.json"


def test_runs_whose_names_hold_dots_get_comparisons_of_their_own(tmp_path):
    args = argparse.Namespace(bootstrap=10, bootstrap_seed=0)
    control = {"run": tmp_path / "weight-0-s0"}
    names = set()
    for weight in ("0.01", "0.03"):
        other = {"run": tmp_path / f"weight-{weight}-s0"}
        _, summary, draws, _ = quality.comparison(control, other, tmp_path, args)
        assert draws.name == summary.name.replace(".json", ".draws.parquet")
        names.add(summary.name)
    assert names == {"weight-0.01-s0-vs-weight-0-s0.json", "weight-0.03-s0-vs-weight-0-s0.json"}


def test_a_comparison_is_reused_only_for_its_split_world_and_resamples(tmp_path):
    runs = [fake_run(tmp_path, name, ["2026-01-01"], ["2026-01-02"]) for name in ("a", "b")]
    summary, draws = tmp_path / "cmp.json", tmp_path / "cmp.draws.parquet"
    draws.write_bytes(b"")
    args = argparse.Namespace(bootstrap=10, bootstrap_seed=0)
    world = tmp_path / "world"
    made = {"split": "valid", "log": str(world), "bootstrap": {"resamples": 10, "seed": 0}}
    summary.write_text(json.dumps(made))
    assert quality.fresh_comparison(summary, draws, runs, args, world, "valid")
    assert not quality.fresh_comparison(summary, draws, runs, args, world, "test")
    assert not quality.fresh_comparison(summary, draws, runs, args, tmp_path / "other", "valid")
    other = argparse.Namespace(bootstrap=20, bootstrap_seed=0)
    assert not quality.fresh_comparison(summary, draws, runs, other, world, "valid")
    (runs[1] / "evaluation_valid.json").touch()  # evaluated again after the comparison
    later = summary.stat().st_mtime + 10
    os.utime(runs[1] / "evaluation_valid.json", (later, later))
    assert not quality.fresh_comparison(summary, draws, runs, args, world, "valid")


def test_a_split_is_compared_pooled_then_day_by_day():
    assert per_day.day_labels(["2026-01-01"]) == {"2026-01-01": None}  # one day: itself
    assert per_day.day_labels(["2026-01-01", "2026-01-02"]) == {
        "pooled": None, "2026-01-01": "2026-01-01", "2026-01-02": "2026-01-02"
    }  # fmt: skip


def test_runs_evaluated_on_different_days_are_refused(tmp_path):
    fake_run(tmp_path, "a-s0", ["2026-01-01"], ["2026-01-02"])
    fake_run(tmp_path, "b-s0", ["2026-01-01"], ["2026-01-03"])
    with pytest.raises(SystemExit, match="same days"):
        per_day.planned_days(tmp_path, "a", "b", [0])
    # or one seed's pair on other days than another seed's
    fake_run(tmp_path, "c-s0", ["2026-01-01"], ["2026-01-03"])
    fake_run(tmp_path, "c-s1", ["2026-01-02"], ["2026-01-03"])
    fake_run(tmp_path, "b-s1", ["2026-01-02"], ["2026-01-03"])
    with pytest.raises(SystemExit, match=r"but c-s1 on .*; b-s1 on "):
        per_day.planned_days(tmp_path, "c", "b", [0, 1])
    (tmp_path / "c-s1" / "evaluation_valid.json").unlink()  # not evaluated on its validation days
    with pytest.raises(SystemExit, match="--split valid"):
        per_day.planned_days(tmp_path, "c", "b", [0, 1])
    # unless only the test days are asked for
    assert per_day.planned_days(tmp_path, "c", "b", [0, 1], ("test",)) == {"test": ["2026-01-03"]}


def test_a_a_counts_are_by_kind_and_leave_undefined_cis_out():
    def pair(kind: str, spans: bool | None) -> dict:
        cell = {"diff": 0.001, "lo": None if spans is None else -0.001, "hi": 0.002,
                "spans_zero": spans}  # fmt: skip
        return {"kind": kind, "differences": {f"{s}/{m}": cell for s, m in aa.METRICS}}

    pairs = [pair("seeds", False), pair("seeds", True), pair("seeds", None), pair("threads", True)]
    counts = aa.excluding_zero(pairs)
    assert counts["seeds"]["all/auc"] == {"pairs": 1, "of": 2}
    assert counts["threads"]["all/auc"] == {"pairs": 0, "of": 1}


def test_the_a_a_pairs_differ_in_no_mechanism():
    pairs = aa.planned_pairs()
    assert len(pairs) == 11 and len(set(pairs)) == 11
    for kind, _, a, b in pairs:
        if kind == "seeds":  # one config, two training seeds
            assert a.rsplit("-s", 1)[0] == b.rsplit("-s", 1)[0] and a != b
        else:  # one config and seed, two thread counts
            assert a.replace("_2threads", "") == b


def test_a_split_of_several_days_is_also_read_over_its_dates():
    """Each seed's difference on each day becomes a cell of the date-aware interval; a metric
    missing on one day (a day without a broad-set sample) is left out."""
    by_day = {
        "2026-01-16": {"all": {"auc": {"per_seed": [0.001, 0.002]}},
                       "broad": {"irrelevant@10": {"per_seed": [-0.01, -0.02]}}},
        "2026-01-17": {"all": {"auc": {"per_seed": [-0.001, 0.000]}}},
        "2026-01-18": {"all": {"auc": {"per_seed": [-0.003, -0.002]}}},
    }  # fmt: skip
    out = quality.over_dates(by_day)
    assert list(out) == ["all"]
    auc = out["all"]["auc"]
    assert auc["cells"] == [[0.001, -0.001, -0.003], [0.002, 0.0, -0.002]]
    assert auc["diff"] == pytest.approx(-0.0005)
    assert auc["lo"] < -0.002 and auc["hi"] > 0.001 and auc["spans_zero"]


def test_only_a_split_of_several_days_gets_an_interval_over_its_dates():
    one = {"all": {"auc": {"per_seed": [0.001, 0.002]}}}
    names = ("valid 2026-01-15", "test pooled", "test 2026-01-16", "test 2026-01-17")
    labels = {name: {"differences": one} for name in names}
    per_day.add_over_dates(labels, ["valid", "test", "test"])  # a split named twice: once
    assert list(labels)[-1] == "test over dates" and "valid over dates" not in labels
    assert labels["test over dates"]["days"] == ["2026-01-16", "2026-01-17"]
    assert labels["test over dates"]["differences"]["all"]["auc"]["cells"] == [
        [0.001, 0.001], [0.002, 0.002]
    ]  # fmt: skip
