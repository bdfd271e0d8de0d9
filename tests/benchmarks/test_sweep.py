"""benchmarks/sweep.py: the grid, the choice of the winner, and a sweep that never scores the
test days."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sweep

from prectr.data.simulate import load_config, simulate
from tests.conftest import tiny_config


def test_the_grid_is_every_combination_in_the_order_given():
    grid = sweep.parse_grid(["model_params.mix_max=0.25,0.5", "features.crowd_days=7"])
    assert sweep.points(grid) == [
        {"model_params.mix_max": "0.25", "features.crowd_days": "7"},
        {"model_params.mix_max": "0.5", "features.crowd_days": "7"},
    ]
    assert sweep.point_name(sweep.points(grid)[1]) == "mix_max-0.5_crowd_days-7"
    lists = sweep.parse_grid(["model_params.relevance_hidden=[64],[64, 32]"])
    assert lists == {"model_params.relevance_hidden": ["[64]", "[64, 32]"]}
    assert sweep.run_names(lists) == ["relevance_hidden-64", "relevance_hidden-64-32"]
    nested = sweep.parse_grid(["a=[[1,2],[3]],[4],{b: 1, c: 2},/tmp/x"])
    assert nested == {"a": ["[[1,2],[3]]", "[4]", "{b: 1, c: 2}", "/tmp/x"]}
    with pytest.raises(ValueError, match="share the run directory"):
        sweep.run_names(sweep.parse_grid(["a=[1,2],1-2"]))
    with pytest.raises(ValueError, match="share the run directory"):
        sweep.run_names(sweep.parse_grid(["a=X,x"]))  # one directory on a case-blind disk
    malformed = ["noise_scale"], ["=1"], ["a=[1,2"], ["a=1],[2"], ["a=1,,2"], ["a=1,"]
    for bad in (*malformed, ["a=1", "a=2"], ["a=1,1"]):
        with pytest.raises(ValueError, match="grid item"):
            sweep.parse_grid(bad)


def test_the_winner_is_the_best_objective_within_the_tolerance_of_another_metric():
    means = [
        {"all:auc": 0.700, "broad:irrelevant@10": 0.30},
        {"all:auc": 0.699, "broad:irrelevant@10": 0.20},  # within 0.002 AUC, fewer irrelevant
        {"all:auc": 0.690, "broad:irrelevant@10": 0.05},  # fewest irrelevant, too costly in AUC
    ]
    assert sweep.choose(means, "all:auc") == 0
    assert sweep.choose(means, "broad:irrelevant@10") == 2  # lower is better
    assert sweep.choose(means, "broad:irrelevant@10", ("all:auc", 0.002)) == 1
    with pytest.raises(ValueError, match="no grid point"):
        sweep.choose([{"all:auc": None}], "all:auc")


def test_the_incumbent_stays_unless_beaten_by_the_gain_on_the_mean_and_in_every_seed():
    def point(*seeds: float) -> dict:
        per_seed = [{"all:auc": v} for v in seeds]
        return {"per_seed": per_seed, "mean": {"all:auc": sum(seeds) / len(seeds)}}

    points = [point(0.6596, 0.6588), point(0.6597, 0.6592), point(0.6610, 0.6587)]
    assert sweep.keep_incumbent(points, 1, 0, "all:auc", 0.0003) == 0  # +0.00025: too little
    assert sweep.keep_incumbent(points, 1, 0, "all:auc", 0.0002) == 1
    assert sweep.keep_incumbent(points, 2, 0, "all:auc", 0.0003) == 0  # +0.00065, one seed down
    key = "broad:irrelevant@10"  # lower is better
    lower = [{"per_seed": [{key: 0.30}], "mean": {key: 0.30}},
             {"per_seed": [{key: 0.20}], "mean": {key: 0.20}}]  # fmt: skip
    assert sweep.keep_incumbent(lower, 1, 0, key, 0.05) == 1
    assert sweep.keep_incumbent(lower, 1, 0, key, 0.2) == 0


def test_a_metric_is_read_from_its_section():
    evaluation = {"metrics": {"auc": 0.7}, "broad": {"irrelevant@10": 0.2},
                  "slices": {"user:cold": {"auc": 0.6}}}  # fmt: skip
    assert sweep.metric(evaluation, "all:auc") == 0.7
    assert sweep.metric(evaluation, "broad:irrelevant@10") == 0.2
    assert sweep.metric(evaluation, "user:cold:auc") == 0.6
    assert sweep.metric({"metrics": {}, "slices": {}}, "broad:ndcg@10") is None
    assert sweep.mean([0.5, 0.7]) == pytest.approx(0.6) and sweep.mean([0.5, None]) is None


def test_the_runs_take_the_worlds_split(tmp_path):
    config = {"valid_days": 3, "test_days": 2}
    (tmp_path / "world.json").write_text(json.dumps({"config": config}))
    assert sweep.world_split(tmp_path) == ["data.valid_days=3", "data.test_days=2"]


@pytest.mark.slow
def test_a_sweep_chooses_on_the_worlds_validation_days_and_never_scores_the_test_days(tmp_path):
    runs = tmp_path / "runs"
    world = runs / "worlds" / "tiny-s0"  # reused by the sweep: two validation days
    simulate(load_config("tiny", overrides={"valid_days": 2}), world)
    config = tmp_path / "dnn.yaml"
    config.write_text(yaml.safe_dump(tiny_config(world, threads=1).to_dict()))
    base = [sys.executable, str(Path(sweep.__file__)), "--config", str(config), "--preset",
            "tiny", "--world-set", "valid_days=2", "--grid", "train.lr_dense=0.001,0.01",
            "--tag", "t", "--runs", str(runs), "--results", str(tmp_path)]  # fmt: skip
    done = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "sweep_t.json").read_text())
    assert [p["point"] for p in record["points"]] == [{"train.lr_dense": "0.001"},
                                                      {"train.lr_dense": "0.01"}]  # fmt: skip
    aucs = [p["mean"]["all:auc"] for p in record["points"]]
    assert record["winner"] == record["best_mean"]
    assert record["winner"] == record["points"][aucs.index(max(aucs))]["point"]
    for point in record["points"]:  # the runs reused: no gain of 1 AUC unseats an incumbent
        value = point["point"]["train.lr_dense"]
        incumbent = ["--incumbent", f"train.lr_dense={value}", "--min-gain", "1"]
        done = subprocess.run([*base, *incumbent], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        again = json.loads((tmp_path / "sweep_t.json").read_text())
        assert again["winner"] == point["point"] and again["best_mean"] == record["winner"]
    swept = list((runs / "sweep" / "tiny-s0" / "t").iterdir())
    assert len(swept) == 2
    for run in swept:
        data = yaml.safe_load((run / "config.yaml").read_text())["data"]
        assert (data["valid_days"], data["test_days"]) == (2, load_config("tiny").test_days)
        assert len(json.loads((run / "evaluation_valid.json").read_text())["per_day"]) == 2
        assert not (run / "evaluation.json").exists() and not (run / "scores.parquet").exists()


def test_a_sweep_that_would_move_the_split_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, str(Path(sweep.__file__)), "--config", "configs/dnn_bench.yaml",
         "--grid", "train.lr_dense=0.001", "--set", "data.valid_days=2", "--tag", "t",
         "--runs", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(sweep.__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 2 and "must not move the split" in done.stderr
    assert not (tmp_path / "worlds").exists()  # refused before anything is simulated


@pytest.mark.parametrize("flags, error", [
    (["--incumbent", "train.lr_dense=0.1"], "is not a point of the grid"),
    (["--min-gain", "0.001"], "--min-gain is a gain (>= 0) over an --incumbent"),
])  # fmt: skip
def test_an_incumbent_off_the_grid_or_a_gain_without_one_is_refused(tmp_path, flags, error):
    done = subprocess.run(
        [sys.executable, str(Path(sweep.__file__)), "--config", "configs/dnn_bench.yaml",
         "--grid", "train.lr_dense=0.001,0.01", "--tag", "t", "--runs", str(tmp_path), *flags],
        capture_output=True, text=True, cwd=Path(sweep.__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 2 and error in done.stderr
    assert not (tmp_path / "worlds").exists()


def test_a_run_trained_on_another_split_is_not_reused(tmp_path):
    """The sweep's split travels as overrides, so the benchmarks' general check
    (``runner.check_reused_config``) refuses a run trained on another split."""
    from runner import training_job

    from prectr.config import load_experiment

    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\nmodel_params: {hidden: [8]}\n")
    run = tmp_path / "run"
    run.mkdir()
    saved = load_experiment(config, ["train.seed=0", *sweep.split_overrides(1, 3)]).to_dict()
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(SystemExit, match=r"data\.valid_days: 1 then, 3 now"):
        training_job(config, tmp_path, run, 0, sweep.split_overrides(3, 3), [])
    assert training_job(config, tmp_path, run, 0, sweep.split_overrides(1, 3), []) is not None
