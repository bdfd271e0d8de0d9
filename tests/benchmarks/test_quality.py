"""benchmarks/quality.py: pooling paired bootstrap differences over seeds, and their table."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality

from prectr.metrics.paired import seed_interval


def seed(diff: float, draws: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    summary = {"sections": {"all": {"auc": {"diff": diff}, "logloss": {"diff": None}}}}
    return summary, {"all/auc": draws, "all/logloss": np.full(draws.size, np.nan)}


def test_seeds_are_pooled_resample_by_resample():
    rng = np.random.default_rng(0)
    draws = [0.03 + 0.01 * rng.standard_normal(1000) for _ in range(3)]
    diffs = (0.02, 0.03, 0.04)
    pooled = quality.pooled_differences([seed(d, x) for d, x in zip(diffs, draws, strict=True)])
    auc = pooled["all"]["auc"]
    assert auc["diff"] == pytest.approx(0.03) and auc["seeds"] == 3
    assert "logloss" not in pooled["all"]
    assert auc["per_seed"] == [0.02, 0.03, 0.04]  # each seed's own, in order
    lo, hi = np.quantile(np.mean(draws, axis=0), [0.025, 0.975])
    assert (auc["lo"], auc["hi"]) == pytest.approx((lo, hi)) and auc["spans_zero"] is False
    # the mean over independent seeds is known better than any one seed
    one = quality.pooled_differences([seed(0.03, draws[0])])["all"]["auc"]
    assert hi - lo < one["hi"] - one["lo"]
    # beside it, the interval that counts the seeds' spread; none with one seed
    seeded = seed_interval(list(diffs), np.mean(draws, axis=0))
    assert (auc["seed_lo"], auc["seed_hi"], auc["seed_df"]) == pytest.approx(seeded)
    assert auc["seed_spans_zero"] is False and "seed_lo" not in one
    # seeds that agree exactly: a normal quantile, recorded as valid JSON (no Infinity)
    same = quality.pooled_differences([seed(0.03, draws[0]), seed(0.03, draws[0])])
    assert same["all"]["auc"]["seed_df"] is None
    json.dumps(same, allow_nan=False)


def test_the_table_says_no_difference_where_the_ci_spans_zero():
    auc = {"diff": 0.002, "lo": -0.001, "hi": 0.004, "spans_zero": True}
    ndcg = {"diff": 0.02, "lo": 0.01, "hi": 0.03, "spans_zero": False}
    report = {
        "seeds": 3,
        "differences": {
            "reference": "dnn",
            "resamples": 1000,
            "by_config": {"din": {"all": {"auc": auc, "ndcg@10": ndcg}}},
        },
    }
    table = quality.differences_markdown(report)
    assert "no difference (+0.0020 [-0.0010, +0.0040])" in table
    ndcg |= {"seed_lo": -0.005, "seed_hi": 0.045}
    assert "**+0.0200 [+0.0100, +0.0300]**; over seeds [-0.0050, +0.0450]" in (
        quality.differences_markdown(report)
    )
    assert "**+0.0200 [+0.0100, +0.0300]**" in table and "By user activity" in table


def test_a_run_without_comparisons_says_so_instead_of_a_table():
    assert "--no-compare" in quality.differences_markdown({"differences": None})


def test_a_benchmark_imports_the_checkout_it_lives_in(tmp_path):
    """Run as a script, a benchmark reads this checkout's prectr, not whichever one the
    environment installed: here none is installed (``-S``: no editable-install hook), only the
    libraries are on the path."""
    import subprocess
    import sysconfig

    root = Path(__file__).resolve().parents[2]
    libraries = sysconfig.get_paths()["purelib"]
    probe = "import record, prectr, pathlib; print(pathlib.Path(prectr.__file__).parents[1])"
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": f"{root / 'benchmarks'}:{libraries}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == root
