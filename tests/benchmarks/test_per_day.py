"""benchmarks/per_day.py and benchmarks/aa.py: a difference by day, and the A/A pairs."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import aa
import per_day


def fake_run(root: Path, name: str, valid: float, days: dict[str, float]) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"best_valid": {"auc": valid}}))
    per = {day: {"auc": auc} for day, auc in days.items()}
    (run / "evaluation.json").write_text(json.dumps({"per_day": per}))


def test_a_difference_is_read_day_by_day_over_seeds(tmp_path):
    for seed, shift in ((0, 0.0), (1, 0.002)):
        fake_run(tmp_path, f"a-s{seed}", 0.70, {"2026-01-02": 0.70, "2026-01-01": 0.70})
        fake_run(tmp_path, f"b-s{seed}", 0.71 + shift, {"2026-01-02": 0.69, "2026-01-01": 0.70})
    got = per_day.pair_by_day(tmp_path, "a", "b", [0, 1])
    assert list(got) == ["valid", "2026-01-01", "2026-01-02"]  # validation first, then by date
    assert got["valid"]["per_seed"] == pytest.approx([0.01, 0.012])
    assert got["valid"]["mean"] == pytest.approx(0.011)
    assert got["2026-01-02"]["mean"] == pytest.approx(-0.01)


def test_runs_evaluated_on_different_days_are_refused(tmp_path):
    fake_run(tmp_path, "a-s0", 0.7, {"2026-01-01": 0.7})
    fake_run(tmp_path, "b-s0", 0.7, {"2026-01-02": 0.7})
    with pytest.raises(SystemExit, match="same days"):
        per_day.pair_by_day(tmp_path, "a", "b", [0])
    # or one seed's pair on other days than another seed's
    fake_run(tmp_path, "c-s0", 0.7, {"2026-01-02": 0.7})
    fake_run(tmp_path, "c-s1", 0.7, {"2026-01-01": 0.7})
    fake_run(tmp_path, "b-s1", 0.7, {"2026-01-01": 0.7})
    with pytest.raises(SystemExit, match="seed 1"):
        per_day.pair_by_day(tmp_path, "c", "b", [0, 1])


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
