import json

import numpy as np
import pytest
import torch

from prectr.cli import main
from prectr.encoder.distill import EncoderRun
from prectr.encoder.pairs import validation_queries
from prectr.encoder.settings import EncoderTrainConfig
from prectr.encoder.teacher import (
    AdaptedTeacher,
    HeadConfig,
    adapt,
    adapt_teacher,
    load_teacher,
    log_pairs,
    read_labels,
    train_head,
)
from prectr.train.checkpoint import load_checkpoint
from prectr.train.stages import StopTraining
from tests.encoder.teacher_models import CountingTeacher, tiny_llm_dir
from tests.train.test_engine import log_lines


def separable(n: int = 600, seed: int = 0):
    """Hidden states whose grade is the argmax of a fixed linear map, and query groups."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, 8)).astype(np.float32)
    grades = (hidden @ rng.normal(size=(8, 4))).argmax(1)
    return hidden, grades, [f"q{i // 6}" for i in range(n)]


@pytest.mark.parametrize("width", [0, 32], ids=["linear", "mlp"])
def test_head_learns_grades_from_hidden_states(width):
    hidden, grades, queries = separable()
    head, summary = train_head(hidden, grades, queries, HeadConfig(hidden=width, lr=1e-2))
    assert summary["valid_accuracy"] > 0.85
    assert summary["train_pairs"] + summary["valid_pairs"] == 600
    again, _ = train_head(hidden, grades, queries, HeadConfig(hidden=width, lr=1e-2))
    for a, b in zip(head.state_dict().values(), again.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # seeded: the same head


def same_checkpoints(a, b, module: str) -> None:
    """The ``best`` and ``last`` checkpoints of runs ``a`` and ``b`` hold equal ``module`` s."""
    for name in ("best", "last"):
        x = load_checkpoint(a / "checkpoints" / f"{name}.pt")[module]
        y = load_checkpoint(b / "checkpoints" / f"{name}.pt")[module]
        assert all(torch.equal(x[k], y[k]) for k in x), name


def test_a_head_killed_mid_run_resumes_to_the_same_head_checkpoints_and_log(tmp_path):
    hidden, grades, queries = separable()
    config = HeadConfig(hidden=16, lr=0.1, max_epochs=12, patience=3)
    whole, summary = train_head(hidden, grades, queries, config, tmp_path / "whole")
    assert summary["best_epoch"] == 4  # stopped early at epoch 7: best and last differ
    assert (tmp_path / "whole" / "tb").is_dir()
    with pytest.raises(StopTraining):  # epochs are 3 steps: the kill ends epoch 2's steps
        train_head(hidden, grades, queries, config, tmp_path / "killed", stop_after=9)
    with pytest.raises(ValueError, match="settings differ"):
        train_head(hidden, grades[::-1].copy(), queries, config, tmp_path / "killed", resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        train_head(hidden, grades, queries, config, tmp_path / "killed")
    resumed, again = train_head(hidden, grades, queries, config, tmp_path / "killed", resume=True)
    assert again == summary
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    same_checkpoints(tmp_path / "whole", tmp_path / "killed", "head")
    assert log_lines(tmp_path / "killed") == log_lines(tmp_path / "whole")


def test_head_validation_holds_out_whole_queries():
    hidden, grades, queries = separable()
    with pytest.raises(ValueError, match="too few labelled queries to hold some out"):
        train_head(hidden[:6], grades[:6], queries[:6])  # one query only
    with pytest.raises(ValueError, match="grades must be 0, 1, 2 or 3"):
        train_head(hidden, grades + 1, queries)
    with pytest.raises(ValueError, match="600 groups"):
        train_head(hidden[:10], grades[:10], queries)


def test_adapted_teacher_saves_and_loads_atomically(tmp_path):
    path = tiny_llm_dir(tmp_path)
    base = load_teacher(path)
    queries, titles = ["oak chair", "sofa"] * 30, ["red chair", "blue lamp"] * 30
    _, hidden = base.encode(queries[:2], titles[:2])
    hidden = np.repeat(hidden, 30, axis=0) + np.random.default_rng(0).normal(size=(60, 32))
    grades = np.arange(60) % 4
    queries_60, config = [f"q{i}" for i in range(60)], HeadConfig(hidden=8, max_epochs=3)
    adapted = adapt_teacher(base, path, hidden.astype(np.float32), grades, queries_60, config)
    adapted.save(tmp_path / "adapted")
    with pytest.raises(FileExistsError):
        adapted.save(tmp_path / "adapted")
    loaded = load_teacher(tmp_path / "adapted")
    assert isinstance(loaded, AdaptedTeacher) and loaded.fingerprint() == adapted.fingerprint()
    np.testing.assert_allclose(
        loaded.grade_logits(queries[:2], titles[:2]),
        adapted.grade_logits(queries[:2], titles[:2]),
        atol=1e-6,
    )
    meta = json.loads((tmp_path / "adapted" / "teacher.json").read_text())
    assert meta["base"] == str(path.resolve()) and meta["head_config"]["hidden"] == 8
    with pytest.raises(ValueError, match="hidden states are 32-d, counting gives 16"):
        adapt_teacher(CountingTeacher(hidden_size=16), "counting", hidden, grades, queries_60)
    meta["base"] = str(tiny_llm_dir(tmp_path, hidden_size=16))  # the base changed under it
    (tmp_path / "adapted" / "teacher.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="head expects 32-d hidden states"):
        load_teacher(tmp_path / "adapted")


def test_adapt_on_a_log_caches_the_base_outputs_and_resumes(tiny_world, tmp_path):
    teacher = tiny_llm_dir(tmp_path)
    config = HeadConfig(hidden=16, max_epochs=5)
    adapted, summary = adapt(
        tiny_world, teacher, tmp_path / "adapted", max_pairs=120, config=config, progress=False
    )
    assert summary["labelling"]["computed"] == 120
    features = tmp_path / "adapted.features"
    assert read_labels(features).num_rows == 120
    # the base's hidden states alone: no grade logits, the layers above the one read not run
    assert read_labels(features).column_names == ["query", "title", "hidden"]
    assert adapted.info["features"] == str(features.resolve())
    # the features are cached: adapting again with another head runs no language model
    _, again = adapt(tiny_world, teacher, tmp_path / "adapted", max_pairs=120, overwrite=True,
                     config=HeadConfig(hidden=0, max_epochs=5), progress=False)  # fmt: skip
    assert again["labelling"]["computed"] == 0 and again["labelling"]["cached"] == 120
    with pytest.raises(FileExistsError):
        adapt(tiny_world, teacher, tmp_path / "adapted", max_pairs=120, progress=False)


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().out


@pytest.mark.slow
def test_teacher_commands_adapt_label_and_evaluate(tiny_world, tmp_path, capsys):
    teacher = str(tiny_llm_dir(tmp_path))
    adapted, labels = str(tmp_path / "adapted"), tmp_path / "labels"
    log = ["--log", str(tiny_world)]
    code, out = run_cli(["teacher", "adapt", *log, "--teacher", teacher, "--out", adapted,
                         "--max-pairs", "80", "--head-hidden", "8"], capsys)  # fmt: skip
    assert code == 0 and "validation accuracy" in out
    assert (tmp_path / "adapted.run" / "checkpoints" / "best.pt").is_file()  # its run beside it
    code, out = run_cli(["teacher", "label", *log, "--teacher", adapted, "--out", str(labels),
                         "--queries", "6", "--part-size", "50"], capsys)  # fmt: skip
    assert code == 0 and "pairs/s" in out
    wanted = log_pairs(tiny_world, n_queries=6)
    table = read_labels(labels)
    assert sorted(
        zip(table["query"].to_pylist(), table["title"].to_pylist(), strict=True)
    ) == sorted(zip(wanted["query"].to_pylist(), wanted["title"].to_pylist(), strict=True))
    assert len(table["hidden"][0]) == 32
    code, out = run_cli(["teacher", "evaluate", teacher, adapted, "--log", str(tiny_world),
                         "--cache", str(tmp_path / "cache"), "--eval-requests", "4"],
                        capsys)  # fmt: skip
    assert code == 0 and "ndcg@10" in out and "spearman" in out
    code, out = run_cli(["teacher", "label", "--log", str(tiny_world), "--teacher", "nowhere",
                         "--out", str(labels)], capsys)  # fmt: skip
    assert code == 2 and "teacher nowhere" in out


def test_interrupted_labelling_says_how_to_resume(tiny_world, tmp_path, capsys, monkeypatch):
    import prectr.encoder.teacher as teacher_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_module, "label_pairs", interrupted)
    teacher = str(tiny_llm_dir(tmp_path))
    argv = ["teacher", "label", "--log", str(tiny_world), "--teacher", teacher, "--out", "l"]
    code, out = run_cli(argv, capsys)
    assert code == 130 and "run the same command again to resume" in out


def test_the_head_never_trains_on_the_queries_the_students_sft_validates_on():
    hidden, grades, _ = separable()
    queries = [f"query {i // 6}" for i in range(600)]  # 100 queries of 6 pairs
    config = HeadConfig(hidden=0, max_epochs=1)
    _, summary = train_head(hidden, grades, queries, config)
    head = validation_queries(queries, config.valid_share)
    assert summary["valid_pairs"] == head.sum() > 0
    student = validation_queries(queries, EncoderTrainConfig().valid_share)
    assert student.any() and not (student & ~head).any()  # the defaults keep it so


def test_a_head_run_started_under_the_earlier_random_split_does_not_resume(tmp_path):
    hidden, grades, queries = separable()
    config = HeadConfig(hidden=0, max_epochs=2)
    train_head(hidden, grades, queries, config, tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded.pop("validation") == "query hash top"
    (tmp_path / "run" / "config.json").write_text(json.dumps(recorded))  # as written before
    with pytest.raises(ValueError, match="settings differ"):
        train_head(hidden, grades, queries, config, tmp_path / "run", resume=True)


def test_no_pair_a_teacher_adapts_on_is_one_the_students_sft_validates_on(
    tiny_world, student_dir, tmp_path
):
    sft = EncoderRun("sft", tiny_world, tmp_path / "sft", train=EncoderTrainConfig(max_steps=1),
                     init=student_dir)  # fmt: skip
    validated = {sft.pairs.queries[q] for q in sft.valid.query}
    pairs = log_pairs(tiny_world, "adapt", human_only=True)  # what `teacher adapt` reads
    queries = pairs["query"].to_pylist()
    head_valid = validation_queries(queries, HeadConfig().valid_share)
    trained = {q for q, v in zip(queries, head_valid, strict=True) if not v}
    assert validated and validated <= set(queries) and not validated & trained
