"""The comparison report: run reading, best-value bolding and the rendered page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import pytest
import yaml

matplotlib.use("Agg")

from prectr.report import RunError, best_rows, load_run, write_report

METRICS_A = {
    "auc": 0.7012, "gauc_user": 0.6345, "gauc_request": 0.6123, "logloss": 0.4012,
    "calibration": 1.0800, "relaimpr": None, "ndcg@10": 0.5123, "mean_grade@10": 1.2340,
    "irrelevant@10": 0.2100, "expected_clicks": 0.8123,
}  # fmt: skip
METRICS_B = {
    "auc": 0.6950, "gauc_user": 0.6401, "gauc_request": 0.6011, "logloss": 0.3950,
    "calibration": 0.9700, "relaimpr": 0.0321, "ndcg@10": 0.5812, "mean_grade@10": 1.4010,
    "irrelevant@10": 0.1500, "expected_clicks": 0.8420,
}  # fmt: skip
BINS = [
    {"mean_predicted": p, "mean_observed": p * 0.9 + 0.01, "count": 100} for p in (0.02, 0.1, 0.3)
]
#: train: loss, loss_click, samples_per_s (+ loss_consistency in B); valid: auc, logloss.
CURVES = 6
#: calibration, trade-off, slices, online.
SUMMARY_FIGURES = 4


def make_run(
    root: Path,
    dirname: str,
    metrics: dict,
    *,
    name: str | None = None,
    model: str | None = "dnn",
    log: list[dict] | None = None,
    bins: list[dict] | None = None,
    evaluation: bool = True,
) -> Path:
    """A run directory following the trainer/evaluate contract, with synthetic numbers."""
    run = root / dirname
    run.mkdir(parents=True)
    if model is not None:
        config = {"model": model, **({"name": name} if name else {})}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    if log is not None:
        (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if evaluation:
        slice_metrics = {
            k: metrics[k] - 0.03 for k in ("auc", "gauc_user", "ndcg@10") if k in metrics
        }
        doc = {
            "model": model or "lr", "world": "/worlds/small", "split": "test", "metrics": metrics,
            "slices": {"cold_start": slice_metrics, "new_items": {"auc": metrics["auc"] - 0.05}},
            "online": {"expected_clicks": metrics.get("expected_clicks"),
                       "logging_expected_clicks": 0.80,
                       "lift": metrics.get("expected_clicks", 0.8) / 0.80 - 1},
            "calibration_bins": bins or [],
        }  # fmt: skip
        (run / "evaluation.json").write_text(json.dumps(doc))
    return run


def train_log(extra: tuple[str, ...] = ()) -> list[dict]:
    records: list[dict] = []
    for step in (100, 200, 300, 400):
        rec = {"step": step, "epoch": 0, "split": "train", "loss": 0.5 - step / 2000}
        rec |= {"loss_click": 0.4 - step / 3000, "samples_per_s": 60000.0 + step}
        rec |= {k: 0.1 for k in extra}
        records.append(rec)
        if step % 200 == 0:
            records.append({"step": step, "epoch": 0, "split": "valid", "auc": 0.6 + step / 4000,
                            "logloss": 0.45 - step / 5000})  # fmt: skip
    return records


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, str]:
    root = tmp_path_factory.mktemp("runs")
    runs = [
        make_run(root, "a", METRICS_A, name="dnn-baseline", log=train_log(), bins=BINS),
        make_run(root, "b", METRICS_B, name="prectr-v2", model="prectr_v2",
                 log=train_log(("loss_consistency",)), bins=BINS[:2]),
    ]  # fmt: skip
    out = write_report(runs, root / "out" / "report.html")
    return runs, out, out.read_text(encoding="utf-8")


def images(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)


def test_report_is_self_contained_and_complete(two_runs: tuple[list[Path], Path, str]) -> None:
    _, out, page = two_runs
    assert out.is_file() and page.startswith("<!DOCTYPE html>")
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    assert "dnn-baseline" in page and "prectr-v2" in page and "prectr_v2" in page
    assert "/worlds/small" in page
    for metrics in (METRICS_A, METRICS_B):
        for key, value in metrics.items():
            assert f"<th>{key}</th>" in page
            if value is not None:
                assert f"{value:.4f}" in page, key
    pngs = images(page)
    assert len(pngs) == CURVES + SUMMARY_FIGURES
    assert all(p.startswith("iVBORw0KGgo") for p in pngs)  # base64 of the PNG signature
    for title in ("Training curves", "Calibration", "trade-off", "Slices", "Online proxy"):
        assert title in page
    assert len(re.findall(r'<p class="caption">', page)) == 7
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temporary behind


def test_bolding_in_page_follows_directions(two_runs: tuple[list[Path], Path, str]) -> None:
    page = two_runs[2]
    bold = set(re.findall(r'<td class="num best"><b>([^<]+)</b></td>', page))
    assert bold == {
        "0.7012",  # auc: A, higher
        "0.6401",  # gauc_user: B
        "0.6123",  # gauc_request: A
        "0.3950",  # logloss: B, lower
        "0.9700",  # calibration: B, |0.97-1| < |1.08-1|
        "0.5812",  # ndcg@10: B
        "1.4010",  # mean_grade@10: B
        "0.1500",  # irrelevant@10: B, lower
        "0.8420",  # expected_clicks: B
    }  # relaimpr: only B has a value, so nothing to beat and no bold


def test_best_rows_direction_rules() -> None:
    assert best_rows("auc", [0.7, 0.72, None]) == {1}
    assert best_rows("ndcg@10", [0.5, 0.5, 0.4]) == {0, 1}  # ties all bold
    assert best_rows("logloss", [0.41, 0.39, 0.40]) == {1}
    assert best_rows("irrelevant@10", [0.2, 0.3]) == {0}
    assert best_rows("calibration", [1.2, 0.85, 1.1]) == {2}
    assert best_rows("calibration", [0.9, 1.1]) == {0, 1}
    assert best_rows("relaimpr", [-0.1, -0.3]) == {0}  # unknown keys: higher is better
    assert best_rows("auc", [0.7, None]) == set()  # a single value beats nothing
    assert best_rows("test_requests", [100.0, 200.0]) == set()  # counts are not ranked


def test_run_without_evaluation_is_an_error_naming_it(tmp_path: Path) -> None:
    good = make_run(tmp_path, "good", METRICS_A, log=train_log())
    bad = make_run(tmp_path, "unevaluated-run", METRICS_A, evaluation=False)
    out = tmp_path / "report.html"
    with pytest.raises(RunError, match=r"unevaluated-run.*evaluation\.json"):
        write_report([good, bad], out)
    assert not out.exists()


def test_runs_without_training_log_still_render(tmp_path: Path) -> None:
    empty = make_run(tmp_path, "empty-log", METRICS_A, name="fresh", log=[], bins=BINS)
    bare = make_run(tmp_path, "bare-run", METRICS_B, model=None)  # no config, no log, no bins
    page = write_report([empty, bare], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "fresh" in page and "bare-run" in page
    assert "No run has a training log." in page
    assert len(images(page)) == SUMMARY_FIGURES


def test_load_run_defaults_and_tolerant_log(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", {"auc": 0.7, "logloss": float("nan")}, model=None)
    (run / "train_log.jsonl").write_text(
        '{"step": 1, "split": "train", "loss": 0.5, "note": "x", "flag": true}\n'
        "\n"
        '{"step": 2, "loss": 0.4, "lr": 0.001}\n'
        '{"step": 3, "loss": 0.3'  # truncated by a killed trainer
    )
    result = load_run(run)
    assert (result.name, result.model, result.log) == ("r1", "lr", "/worlds/small")
    assert result.metrics == {"auc": 0.7, "logloss": None}
    assert result.curves() == {("train", "loss"): ([1.0, 2.0], [0.5, 0.4]),
                               ("train", "lr"): ([2.0], [0.001])}  # fmt: skip


def test_module_entry_point(tmp_path: Path) -> None:
    from prectr.report.__main__ import main

    run = make_run(tmp_path, "only", METRICS_A)  # no log, no bins: 3 figures
    out = tmp_path / "cli.html"
    assert main([str(run), "-o", str(out)]) == 0
    assert len(images(out.read_text(encoding="utf-8"))) == SUMMARY_FIGURES - 1
    assert main([str(tmp_path / "nothing"), "-o", str(out)]) == 2


def test_slices_table_lists_every_slice_of_every_run(two_runs: tuple[list[Path], Path, str]):
    page = two_runs[2]
    assert "<th>slice</th><th>run</th>" in page
    rows = re.findall(r"<tr><td>(cold_start|new_items)</td><td>.*?</tr>", page)
    assert rows.count("cold_start") == 2 and rows.count("new_items") == 2
    # cold_start auc: A 0.7012 - 0.03 beats B 0.6950 - 0.03
    assert f'<td class="num best">{METRICS_A["auc"] - 0.03:.4f}</td>' in page


def test_labels_name_runs_of_one_config_apart(tmp_path: Path, capsys) -> None:
    from tests.test_cli import run_cli

    runs = [make_run(tmp_path, d, m, name="dnn_small", log=train_log(), bins=BINS)
            for d, m in (("seed0", METRICS_A), ("seed1", METRICS_B))]  # fmt: skip
    page = write_report(runs, tmp_path / "r.html", labels=["dnn s0", "dnn s1"]).read_text()
    assert "dnn_small" not in page and '<p class="meta">2 runs ·' in page
    swatch = r'<span class="swatch" style="background:[^"]+"></span>'
    for label in ("dnn s0", "dnn s1"):  # the runs, metrics and online tables, 2 slice rows
        assert len(re.findall(f"<td>{swatch}{label}</td>", page)) == 5, label
    with pytest.raises(ValueError, match="1 label for 2 runs"):
        write_report(runs, tmp_path / "r.html", labels=["only one"])
    with pytest.raises(ValueError, match="each run needs its own"):
        write_report(runs, tmp_path / "r.html", labels=["dnn", "dnn"])
    out = tmp_path / "cli.html"
    code, _ = run_cli(["report", *map(str, runs), "--out", str(out), "--labels", "A", "B"],
                      capsys)  # fmt: skip
    text = out.read_text()
    assert code == 0 and "</span>A</td>" in text and "</span>B</td>" in text
    from prectr.report.__main__ import main

    assert main([*map(str, runs), "-o", str(out), "--labels", "A"]) == 2  # one label short
