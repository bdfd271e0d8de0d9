import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from prectr.cli import main
from prectr.data.schema import read_log


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().out


def test_help_explains_each_subcommand(capsys):
    code, out = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("simulate", "validate", "load", "score"):
        assert command in out


def test_simulate_prints_the_summary(tmp_path, capsys):
    code, out = run_cli(
        ["simulate", "--preset", "tiny", "--n-requests", "200", "--out", str(tmp_path / "w")],
        capsys,
    )
    assert code == 0
    assert "CTR by position" in out and "cold-start requests" in out
    assert (tmp_path / "w" / "world.json").is_file()


def write_broken_log(root):
    """A log with a duplicate item, an unknown request, a click on an unexposed candidate and
    a grade outside 0-3."""
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "item_id": [1, 1],
                "title": ["a", "b"],
                "category": ["c", "c"],
                "brand": [None, None],
                "price": [1.0, 2.0],
            }
        ),
        root / "items.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "request_id": [7],
                "user_id": [1],
                "query": ["q"],
                "timestamp": pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("ms")),
            }
        ),
        root / "requests.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "request_id": [7, 8],
                "item_id": [1, 1],
                "position": [1, None],
                "click": [0, 1],
                "relevance": [9, None],
                "relevance_source": ["human", None],
            }
        ),
        root / "impressions.parquet",
    )
    return root


def test_validate_lists_every_problem_and_fails(tmp_path, capsys):
    write_broken_log(tmp_path)
    code, out = run_cli(["validate", str(tmp_path)], capsys)
    assert code == 1
    assert "duplicate item_id" in out and "row 1" in out
    assert "unknown request_id" in out
    assert "click on an unexposed candidate" in out
    assert "column 'relevance'" in out and "grade outside 0-3" in out


@pytest.mark.parametrize("module", ["prectr", "prectr.cli"])  # prectr.cli: what torchrun runs
def test_python_m_runs_the_command_and_returns_its_exit_code(tmp_path, module):
    write_broken_log(tmp_path)
    done = subprocess.run([sys.executable, "-m", module, "validate", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "invalid" in done.stdout and "duplicate item_id" in done.stdout


def test_validate_and_score_a_world(tiny_world, capsys):
    code, out = run_cli(["validate", str(tiny_world)], capsys)
    assert code == 0 and "valid" in out and "note" not in out
    code, out = run_cli(["score", str(tiny_world), "--rankers", "logging", "random"], capsys)
    assert code == 0
    assert "ndcg@10" in out and "expected_clicks" in out and "random" in out


def test_load_with_the_wrong_number_of_files_is_a_clear_error(tmp_path, capsys):
    code, out = run_cli(["load", "esci", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "o")],
                    capsys)  # fmt: skip
    assert code == 2 and "expected 2 source paths" in out


def test_train_evaluate_report(tiny_world, tmp_path, capsys):
    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\nmodel_params: {hidden: [16]}\ndata: {batch_size: 256}\n"
                      "train: {epochs: 1}\n")  # fmt: skip
    run = tmp_path / "run"
    code, out = run_cli(["train", str(config), "--log", str(tiny_world), "--out", str(run)], capsys)
    assert code == 0 and "best valid auc" in out
    code, out = run_cli(["evaluate", str(run), "--world", str(tiny_world)], capsys)
    assert code == 0 and "online proxy" in out and "95% CI" in out
    for section in ("by query frequency", "by user activity", "by exact-item scarcity",
                    "new items", "unseen", "cold"):  # fmt: skip
        assert section in out
    html = tmp_path / "report.html"
    code, out = run_cli(["report", str(run), "--out", str(html)], capsys)
    assert code == 0 and html.is_file()
    code, out = run_cli(["train", str(config), "--log", str(tiny_world), "--out", str(run)], capsys)
    assert code == 2 and "--resume" in out


def test_compare_prints_and_writes_paired_differences(two_day_runs, tiny_world, tmp_path, capsys):
    import json

    a, b = two_day_runs
    code, out = run_cli(["compare", str(a), str(tmp_path / "none"), "--world", str(tiny_world)],
                        capsys)  # fmt: skip
    assert code == 2 and "config.yaml" in out
    for run in (a, b):
        (run / "scores.parquet").unlink(missing_ok=True)
    code, out = run_cli(["compare", str(a), str(b), "--world", str(tiny_world)], capsys)
    assert code == 2 and "scores.parquet is missing" in out and "prectr evaluate" in out
    for run in (a, b):
        code, _ = run_cli(["evaluate", str(run), "--world", str(tiny_world), "--bootstrap", "50"],
                          capsys)  # fmt: skip
        assert code == 0
    out_json, draws = tmp_path / "cmp.json", tmp_path / "draws.parquet"
    code, out = run_cli(["compare", str(a), str(b), "--world", str(tiny_world), "--bootstrap",
                         "100", "--out", str(out_json), "--draws", str(draws)], capsys)  # fmt: skip
    assert code == 0 and "B - A" in out and "by user activity" in out
    summary = json.loads(out_json.read_text())
    assert summary["bootstrap"]["resamples"] == 100 and "user:cold" in summary["sections"]
    auc = summary["sections"]["all"]["auc"]
    assert set(auc) == {"a", "b", "diff", "mean", "lo", "hi", "spans_zero"}
    table = pq.read_table(draws)
    assert table.num_rows == 100 and "all/auc" in table.column_names
    day = summary["test_days"][0]
    code, out = run_cli(["compare", str(a), str(b), "--world", str(tiny_world), "--bootstrap",
                         "100", "--day", day, "--out", str(out_json)], capsys)  # fmt: skip
    assert code == 0 and json.loads(out_json.read_text())["test_days"] == [day]
    code, out = run_cli(["compare", str(a), str(b), "--world", str(tiny_world), "--day",
                         "1999-01-01"], capsys)  # fmt: skip
    assert code == 2 and "1999-01-01 are not in the test split" in out


@pytest.mark.parametrize("resume", [[], ["--resume"]])  # --resume: an elastic job's first start
def test_a_prepared_run_trains_without_its_log(tiny_world, tmp_path, capsys, resume):
    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\nmodel_params: {hidden: [16]}\ndata: {shards: 3}\n"
                      "train: {epochs: 1}\n")  # fmt: skip
    run = tmp_path / "run"
    code, out = run_cli(["prepare", str(config), "--log", str(tiny_world), "--out", str(run)],
                        capsys)  # fmt: skip
    assert code == 0 and "valid" in out and len(list((run / "data" / "train").iterdir())) == 3
    code, out = run_cli(["train", str(config), "--out", str(run), *resume], capsys)  # no --log
    assert code == 0 and "trained dnn" in out and (run / "checkpoints" / "best.pt").is_file()
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("shards: 3", "shards: 2"))
    code, out = run_cli(["prepare", str(other), "--log", str(tiny_world), "--out", str(run)],
                        capsys)  # fmt: skip
    assert code == 2 and "not empty" in out


def test_shards_at_a_filesystem_uri_are_written_there_and_read_by_each_rank(
    tiny_world, tmp_path, capsys
):
    from prectr.config import load_experiment
    from prectr.train.data import load_prepared

    store = tmp_path / "store"
    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\nmodel_params: {hidden: [16]}\ntrain: {epochs: 1}\n"
                      f"data: {{shards: 3, shards_uri: '{store.as_uri()}'}}\n")  # fmt: skip
    run = tmp_path / "run"
    code, out = run_cli(["prepare", str(config), "--log", str(tiny_world), "--out", str(run)],
                        capsys)  # fmt: skip
    assert code == 0 and store.as_uri() in "".join(out.split())  # rich wraps the title
    assert sorted(p.name for p in (store / "train").iterdir()) == [
        f"part-{i:05d}.parquet" for i in range(3)
    ]  # fmt: skip
    assert not (run / "data" / "train").exists()  # nothing of the shards in the run directory
    data = load_prepared(run, store.as_uri())
    everything = {int(r) for p in data.shards["train"] for r in pq.read_table(p)["request_row"]}
    experiment = load_experiment(config)
    ranks = [{int(r) for b in data.stream("train", experiment, False, "all", rank, 2).epoch()
              for r in b.request} for rank in (0, 1)]  # fmt: skip
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == everything  # each its own shards
    code, out = run_cli(["train", str(config), "--out", str(run)], capsys)  # no --log
    assert code == 0 and "trained dnn" in out
    (store / "valid" / "part-00001.parquet").unlink()  # what training reads is the URI's
    with pytest.raises(FileNotFoundError, match=rf"{store.as_uri()}: .*part-00001.* missing"):
        load_prepared(run, store.as_uri())


def test_a_shard_location_that_cannot_be_opened_is_named_and_creates_no_run(
    tiny_world, tmp_path, capsys
):
    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\ndata: {shards_uri: 'nosuch://bucket/prepared'}\n")
    run = tmp_path / "run"
    code, out = run_cli(["prepare", str(config), "--log", str(tiny_world), "--out", str(run)],
                        capsys)  # fmt: skip
    text = " ".join(out.split())
    assert code == 2 and "nosuch://bucket/prepared: cannot open this location" in text
    assert not run.exists()


def test_training_refuses_a_log_that_fails_validation(tmp_path, capsys):
    config = tmp_path / "dnn.yaml"
    config.write_text("model: dnn\n")
    log = write_broken_log(tmp_path / "log")
    code, out = run_cli(["train", str(config), "--log", str(log), "--out", str(tmp_path / "r")],
                        capsys)  # fmt: skip
    assert code == 2 and "fails schema validation" in out and "duplicate item_id" in out
    assert not (tmp_path / "r").exists()


def flat_cli(argv, capsys):
    """run_cli, with the output's lines joined (rich wraps long messages)."""
    code, out = run_cli(argv, capsys)
    return code, " ".join(out.split())


def test_validate_counts_one_problem_in_the_singular(tmp_path, capsys):
    log = write_broken_log(tmp_path)
    pq.write_table(pa.table({"request_id": [7], "item_id": [1], "position": [1], "click": [0],
                             "relevance": pa.array([None], pa.int8()),
                             "relevance_source": pa.array([None], pa.string())}),
                   log / "impressions.parquet")  # fmt: skip
    code, out = flat_cli(["validate", str(log)], capsys)
    assert code == 1 and ": 1 problem - items" in out and "duplicate item_id" in out


def test_help_pages_show_the_defaults(capsys):
    code, out = flat_cli(["serve", "--help"], capsys)
    assert code == 0
    for shown in ("port to listen on (default: 8000)", "(default: 127.0.0.1)",
                  "(default: torch)", "(default: best)", "(default: 100000)"):  # fmt: skip
        assert shown in out, shown
    code, out = run_cli(["encoder", "sft", "--help"], capsys)  # a nested subcommand
    assert code == 0 and "(default: 144)" in out
    code, out = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--overwrite" in out and "(default: None)" not in out


DNN = "model: dnn\nmodel_params: {hidden: [16]}\ndata: {batch_size: 256}\ntrain: {epochs: 1}\n"


def test_a_run_alone_exports_and_serves_from_any_directory(tiny_world, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    from fastapi.testclient import TestClient

    config = tmp_path / "dnn.yaml"
    config.write_text(DNN)
    monkeypatch.chdir(tiny_world.parent)  # --log relative to the working directory
    code, _ = run_cli(["train", str(config), "--log", tiny_world.name, "--out",
                       str(tmp_path / "run")], capsys)  # fmt: skip
    assert code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["log"] == str(tiny_world.resolve())
    monkeypatch.chdir(tmp_path)  # where that relative path names nothing
    code, out = run_cli(["export", "run", "--format", "torchscript", "--out", "model.pt"], capsys)
    assert code == 0 and (tmp_path / "model.pt").is_file() and "largest difference" in out
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.update(app=app))
    code, _ = run_cli(["serve", "run"], capsys)
    assert code == 0
    with TestClient(served["app"]) as client:
        ranked = client.post(
            "/rank",
            json={
                "user_id": 1,
                "query": "sofa",
                "candidates": [
                    {"item_id": 1, "title": "blue velvet sofa", "category": "Sofas", "price": 10.0}
                ],
            },
        )
    assert ranked.status_code == 200, ranked.text  # fmt: skip


@pytest.mark.parametrize(
    ("model", "params", "names"),
    [
        ("dnn", "{layers: 3}", "layers"),  # unknown: caught when the config loads
        ("dnn", "{hidden: sixteen}", "model_params.hidden"),  # wrong type: the same
        ("prectr_v2", "{consistency: klx}", "model_params.consistency"),  # a choice: the same
        # a combination the model refuses: by building it
        ("prectr_v2", "{incentive: false, cross_user: true}", "it needs incentive: true"),
    ],
)
def test_a_bad_model_parameter_writes_nothing_and_names_the_key(tiny_world, tmp_path, capsys,
                                                                 model, params, names):  # fmt: skip
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"model: {model}\nmodel_params: {params}\ntrain: {{epochs: 1}}\n"
        "features: {relevance_context: true}\n"
    )
    run = tmp_path / "run"
    for command in ("prepare", "train"):
        code, out = flat_cli([command, str(config), "--log", str(tiny_world), "--out", str(run)],
                             capsys)  # fmt: skip
        assert code == 2 and names in out, out
        assert not run.exists()


def test_a_mistyped_override_is_refused_with_the_key_meant(tiny_world, tmp_path, capsys):
    config = tmp_path / "dnn.yaml"
    config.write_text(DNN)
    run = tmp_path / "run"
    code, out = flat_cli(["train", str(config), "--log", str(tiny_world), "--out", str(run),
                          "--set", "train.lr_dens=0.1", "--set", "data.batch_size=big"],
                         capsys)  # fmt: skip
    assert code == 2 and "train.lr_dens: unknown key; did you mean lr_dense?" in out, out
    assert "data.batch_size: Input should be a valid integer" in out, out
    assert not run.exists()


def test_a_failed_run_is_retried_with_overwrite(tiny_world, tmp_path, capsys):
    from prectr.train.stages import StopTraining
    from prectr.train.trainer import Trainer
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    with pytest.raises(StopTraining):  # a run killed after its first steps
        Trainer(tiny_config(tiny_world, checkpoint_every=1), run, stop_after=2).fit()
    config = tmp_path / "dnn.yaml"
    config.write_text(DNN)
    train = ["train", str(config), "--log", str(tiny_world), "--out", str(run)]
    code, out = flat_cli(train, capsys)
    assert code == 2 and "--overwrite" in out and "--resume" in out
    code, out = flat_cli([*train, "--resume"], capsys)  # another config: not a resume
    assert code == 2 and "config differs" in out
    code, out = flat_cli([*train, "--resume", "--overwrite"], capsys)
    assert code == 2 and "pass one" in out
    code, out = flat_cli([*train, "--overwrite"], capsys)
    assert code == 0 and "trained dnn" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model_params"] == {"hidden": [16]} and saved["data"]["batch_size"] == 256


def test_validate_names_the_commands_a_valid_log_is_too_small_for(tmp_path, capsys):
    from tests.encoder.graded_log import graded_log, shop_judgments

    log = read_log(graded_log(tmp_path / "graded", shop_judgments(6)))
    code, out = run_cli(["validate", str(tmp_path / "graded")], capsys)
    text = " ".join(out.split())
    assert code == 0 and "valid" in text and "spans 1 day; a time split needs more than 2" in text
    assert "--held-out query" in text and "no human grade" not in text
    n = log.impressions.num_rows
    log.impressions = log.impressions.set_column(5, "relevance_source", pa.array(["teacher"] * n))
    log.write(tmp_path / "teacher_graded")
    code, out = run_cli(["validate", str(tmp_path / "teacher_graded")], capsys)
    assert code == 0 and "no human grade" in " ".join(out.split())


def test_the_command_line_builds_its_parser_without_pytorch_or_scipy():
    """The parser, which every command builds before it runs, loads neither: settings and
    choices live apart from the code that needs PyTorch, and SciPy loads where it is used."""
    heavy = ("torch", "scipy", "transformers")
    code = ("import sys; from prectr.cli import build_parser; build_parser(); "
            f"print(' '.join(m for m in {heavy} if m in sys.modules))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    assert loaded == []
