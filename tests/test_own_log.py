"""A user's own log, made from scratch (no simulator), through every step of the command line:
validate, train, evaluate, compare, report, export and serve, the last two from the run
directory alone."""

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from prectr.cli import main
from prectr.data.schema import read_log
from prectr.data.shards import time_split
from prectr.metrics import auc, calibration
from prectr.rankers import popularity_ranker
from tests.own_log import own_log


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code, capsys.readouterr().out


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return own_log(tmp_path_factory.mktemp("own") / "log")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("own_config") / "dnn.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": "dnn",
                "model_params": {"hidden": [32, 16]},
                "data": {"batch_size": 128, "test_days": 2},
                "train": {"epochs": 2, "log_every": 20},
            }
        )
    )
    return path


def test_a_log_made_from_scratch_validates_trains_and_is_evaluated_on_its_own_truth(
    shop, config, tmp_path, capsys
):
    assert not (shop / "world.json").exists()
    code, out = run_cli(["validate", shop], capsys)
    assert code == 0, out
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"dnn{seed}"
        code, out = run_cli(["train", config, "--log", shop, "--out", run,
                             "--set", f"train.seed={seed}"], capsys)  # fmt: skip
        assert code == 0, out
        code, out = run_cli(["evaluate", run, "--log", shop, "--bootstrap", "50"], capsys)
        assert code == 0, out
        assert "skipped online: needs a simulated world" in out
        runs.append(run)

    result = json.loads((runs[0] / "evaluation.json").read_text())
    assert result["truth"]["source"] == "log" and "human grades" in result["truth"]["grades"]
    metrics = result["metrics"]
    # the log's own truth: AUC and calibration from the written scores joined to its clicks
    log = read_log(shop)
    scores = pq.read_table(runs[0] / "scores.parquet")
    shown = log.impressions.join(scores, ["request_id", "item_id"], join_type="inner")
    shown = shown.filter(shown["click"].is_valid())
    click = shown["click"].to_numpy().astype(int)
    assert metrics["auc"] == pytest.approx(auc(click, shown["score"].to_numpy()), rel=1e-12)
    # the shop's clicks favour items of the query's category, which an item's own click rate
    # does not see: the model ranks the test clicks well above the popularity ranker fitted on
    # the training days (AUC 0.63 and 0.64 for seeds 0 and 1 against its 0.51)
    train = log.requests.take(time_split(log.requests, 1, 2)["train"])["request_id"]
    trained_on = log.impressions.filter(pc.is_in(log.impressions["request_id"], train))
    popular, _ = popularity_ranker(trained_on, shown)
    assert metrics["auc"] > auc(click, popular) + 0.05 and metrics["click_ndcg@10"] > 0.0
    assert metrics["calibration"] == pytest.approx(calibration(click, shown["shown"].to_numpy()))
    assert len(result["per_day"]) == 2
    assert {"query:head", "user:cold", "new_items", "unexposed"} <= set(result["slices"])
    # what needs a world is named, with the reason
    assert "online" not in result and "broad" not in result
    assert {"online", "broad", "exact"} <= set(result["skipped"])
    assert "graded" in result["skipped"]["exact"]
    # in place of the replay, the off-policy estimate from the log's own clicks
    offpolicy = result["offpolicy"]
    assert offpolicy["k"] == 6 and len(offpolicy["examination"]) == 6
    for name in ("ips", "dr", "logged"):
        estimate = offpolicy[name]
        assert estimate["lo"] <= estimate["value"] <= estimate["hi"], name
    assert 0.0 < offpolicy["coverage"]["supported"] <= 1.0
    assert offpolicy["model"].startswith("position-based")
    # a dependent click model the user supplies: same harvest, clicks adjusted for stopping
    code, out = run_cli(["evaluate", runs[0], "--bootstrap", "50", "--after-click", "0.6",
                         "--top-examination", "0.8"], capsys)  # fmt: skip
    assert code == 0 and "dependent click model" in out, out
    dependent = json.loads((runs[0] / "evaluation.json").read_text())["offpolicy"]
    assert dependent["after_click"] == 0.6 and dependent["ips"] != offpolicy["ips"]
    code, out = run_cli(["evaluate", runs[0], "--after-click", "0"], capsys)
    assert code != 0 and "after_click = 0.0: expected a value in (0, 1]" in out

    code, out = run_cli(["compare", *runs, "--log", shop, "--bootstrap", "50"], capsys)
    assert code == 0, out
    assert "auc" in out and "ndcg@10" in out

    page = tmp_path / "report.html"
    code, out = run_cli(["report", *runs, "--out", page], capsys)
    assert code == 0, out
    html = page.read_text()
    assert "needs a simulated world" in html
    # each run's online proxy names the click model its off-policy estimate assumed
    assert "doubly robust; position-based" in html and "doubly robust; dependent click" in html

    # lambda unknown: a band over a range of it, each point's CI inside, shown in the report
    position_based = json.loads((runs[1] / "evaluation.json").read_text())["offpolicy"]
    code, out = run_cli(["evaluate", runs[1], "--bootstrap", "50", "--after-click", "0.6:1:3"],
                        capsys)  # fmt: skip
    assert code == 0 and "band over lambda in [0.6, 1]" in out, out
    band = json.loads((runs[1] / "evaluation.json").read_text())["offpolicy"]
    assert band["after_click"] == [0.6, 0.8, 1.0] and "ips" not in band
    for name in ("ips", "dr", "dr_lift"):
        assert all(band["band"][name]["lo"] <= point[name]["lo"] <= point[name]["hi"]
                   <= band["band"][name]["hi"] for point in band["grid"]), name  # fmt: skip
    assert band["grid"][2]["ips"] == position_based["ips"]  # lambda 1: position-based
    code, out = run_cli(["report", *runs, "--out", page], capsys)
    assert code == 0, out
    low, high = band["band"]["dr"]["lo"], band["band"]["dr"]["hi"]
    assert f"lambda in [0.6, 1] (3 points): [{low:.4f}, {high:.4f}]" in page.read_text()
    for bad in ("0.8:0.4", "0.4:1.5", "0.4-1"):
        code, out = run_cli(["evaluate", runs[1], "--after-click", bad], capsys)
        assert code != 0 and f"--after-click {bad}: " in out, out

    # export and serve need nothing but the run directory: it remembers the log it trained on
    code, out = run_cli(["export", runs[0], "--out", tmp_path / "model.onnx"], capsys)
    assert code == 0, out
    assert (tmp_path / "model.onnx").stat().st_size > 0
    served_scores_match_offline(runs[0], shop)


def served_scores_match_offline(run: Path, shop: Path) -> None:
    """A logged test request sent to the service ranks its candidates with the scores the
    evaluation wrote for them."""
    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    from prectr.serve.app import create_app
    from prectr.serve.ranker import Ranker

    ranker = Ranker(run)
    assert Path(ranker.run.config.data.log) == shop.resolve()
    scores = pq.read_table(run / "scores.parquet").to_pylist()
    request_id = scores[-1]["request_id"]
    row = ranker.store.requests["request_id"].to_pylist().index(request_id)
    request = ranker.logged_request(row)
    body = {
        "user_id": request.user_id,
        "query": request.query,
        "query_category": request.query_category,
        "timestamp": request.timestamp.isoformat(),
        "candidates": [vars(c) for c in request.candidates],
    }
    with TestClient(create_app(ranker)) as client:
        response = client.post("/rank", json=body)
    assert response.status_code == 200, response.text
    served = {r["item_id"]: r["score"] for r in response.json()["ranking"]}
    offline = {r["item_id"]: r["score"] for r in scores if r["request_id"] == request_id}
    assert served.keys() == offline.keys()
    for item, score in offline.items():
        assert served[item] == pytest.approx(score, abs=1e-5)
