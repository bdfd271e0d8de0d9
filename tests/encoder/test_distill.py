import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from prectr.data.dataset import time_split
from prectr.data.schema import read_log
from prectr.encoder.distill import EncoderRun, EncoderTrainConfig, StopTraining
from prectr.encoder.pairs import read_teacher_labels
from prectr.encoder.student import StudentConfig, load_student
from tests.encoder.conftest import TINY

STUDENT = StudentConfig(**TINY)


def train(steps: int, **overrides) -> EncoderTrainConfig:
    values = dict(max_steps=steps, batch_size=32, lr=3e-3, vocab_size=300, log_every=2,
                  checkpoint_every=3, eval_requests=20)  # fmt: skip
    return EncoderTrainConfig(**{**values, **overrides})


def test_log_pairs_split_by_time_and_keep_only_human_grades(pairs) -> None:
    assert pairs.train.num_rows == len(set(zip(*pairs.train.to_pydict().values(), strict=True)))
    assert pairs.labelled.num_rows > 0 and pairs.labelled["grade"].null_count == 0
    held = pairs.held_out
    assert set(held["grade"].to_numpy()) <= {0, 1, 2, 3}


def test_no_held_out_pair_is_trained_on_even_when_a_training_day_showed_it(tiny_world, pairs):
    log = read_log(tiny_world)
    test_requests = log.requests.take(time_split(log.requests)["test"])["request_id"]
    imp = log.impressions.join(log.requests.select(["request_id", "query"]), "request_id")
    imp = imp.join(log.items.select(["item_id", "title"]), "item_id")
    on_test_day = pc.is_in(imp["request_id"], test_requests)

    def keys(table, by_index=False):
        q, t = table["query"].to_pylist(), table["title"].to_pylist()
        if by_index:
            q, t = [pairs.queries[i] for i in q], [pairs.titles[i] for i in t]
        return set(zip(q, t, strict=True))

    held, earlier = keys(imp.filter(on_test_day)), keys(imp.filter(pc.invert(on_test_day)))
    assert held & earlier  # some test-day pairs were shown on training days too
    assert keys(pairs.held_out, True) == held
    assert keys(pairs.train, True) == earlier - held
    assert not keys(pairs.labelled, True) & held


def test_teacher_labels_join_the_training_pairs_and_count_the_rest(pairs, labels_path) -> None:
    labels = read_teacher_labels(labels_path, pairs)
    assert labels.unmatched == 1 and labels.logits.shape == (pairs.train.num_rows, 4)
    assert labels.hidden.shape == (pairs.train.num_rows, 8)


def test_teacher_labels_may_come_as_a_directory_of_parts(pairs, labels_path, tmp_path) -> None:
    table = pq.read_table(labels_path)
    (tmp_path / "meta.json").write_text("{}")  # what `prectr teacher label` writes beside
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), tmp_path / "part-00000.parquet")
    pq.write_table(table.slice(half), tmp_path / "part-00001.parquet")
    labels = read_teacher_labels(tmp_path, pairs)
    np.testing.assert_array_equal(labels.logits, read_teacher_labels(labels_path, pairs).logits)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"query": ["a"], "title": ["b"]}), "lack the column 'logits'"),
        (pa.table({"query": ["a", "b"], "title": ["b", "c"],
                   "logits": [[0.0] * 4, [0.0] * 3]}), "row 1: logits has 3 values"),
        (pa.table({"query": ["a", None], "title": ["b", "c"], "logits": [[0.0] * 4] * 2}),
         "row 1: query is null"),
        (pa.table({"query": ["a"], "title": ["b"], "logits": [[0.0, float("nan"), 0.0, 0.0]]}),
         "row 0: logits holds a NaN"),
        (pa.table({"query": ["a"], "title": ["b"], "logits": [[0.0] * 4]}), "none of its 1"),
    ],
)  # fmt: skip
def test_bad_teacher_labels_are_refused_naming_file_row_and_field(
    pairs, tmp_path, table, message
) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=message) as err:
        read_teacher_labels(path, pairs)
    assert "labels.parquet" in str(err.value)


def test_distillation_resumes_exactly_after_a_kill(
    tiny_world, labels_path, tokenizer, tmp_path
) -> None:
    shared = tokenizer.save(tmp_path / "tokenizer.json")
    args = dict(student=STUDENT, labels=labels_path, tokenizer=shared)
    whole = EncoderRun("distill", tiny_world, tmp_path / "whole", train=train(7), **args)
    whole.fit()
    killed = EncoderRun("distill", tiny_world, tmp_path / "killed", train=train(7),
                        stop_after=4, **args)  # fmt: skip
    with pytest.raises(StopTraining):
        killed.fit()
    resumed = EncoderRun("distill", tiny_world, tmp_path / "killed", train=train(7),
                         resume=True, **args)  # fmt: skip
    assert resumed.state["step"] == 3  # the last checkpoint, written every 3 steps
    resumed.fit()
    for a, b in zip(whole.student.state_dict().values(), resumed.student.state_dict().values(),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="settings differ"):
        EncoderRun("distill", tiny_world, tmp_path / "killed", train=train(8), resume=True,
                   **args)  # fmt: skip
    with pytest.raises(FileExistsError, match="not empty"):
        EncoderRun("distill", tiny_world, tmp_path / "whole", train=train(7), **args)


def test_distillation_with_hidden_mse_learns_and_reports_held_out_quality(
    tiny_world, labels_path, tmp_path
) -> None:
    run = EncoderRun("distill", tiny_world, tmp_path / "d", STUDENT,
                     train(40, hidden_weight=0.5), labels_path)  # fmt: skip
    result = run.fit()
    log = [json.loads(line) for line in (tmp_path / "d" / "train_log.jsonl").open()]
    assert {"loss_kl", "loss_hidden"} <= set(log[0])
    assert np.mean([e["loss_kl"] for e in log[-3:]]) < 0.8 * np.mean(
        [e["loss_kl"] for e in log[:3]]
    )
    held = result["held_out"]
    assert 0 <= held["accuracy"] <= 1 and -1 <= held["spearman"] <= 1 and held["requests"] == 20
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["steps"] == 40
    student, _ = load_student(tmp_path / "d" / "student")
    assert student.config.vocab_size == run.tokenizer.vocab_size


def test_sft_starts_from_the_distilled_student_and_fits_the_human_grades(
    tiny_world, student_dir, tmp_path
) -> None:
    run = EncoderRun("sft", tiny_world, tmp_path / "sft", train=train(30), init=student_dir)
    initial, _ = load_student(student_dir)
    for a, b in zip(initial.state_dict().values(), run.student.state_dict().values(),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)
    run.fit()
    log = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").open()]
    assert np.mean([e["loss_ce"] for e in log[-3:]]) < np.mean([e["loss_ce"] for e in log[:3]])
    assert not (tmp_path / "sft" / "tokenizer.json").exists()  # the init student's tokenizer


def test_distillation_needs_labels_and_hidden_states_when_asked(
    tiny_world, labels_path, tmp_path
) -> None:
    with pytest.raises(ValueError, match="--labels"):
        EncoderRun("distill", tiny_world, tmp_path / "x", STUDENT, train(1))
    with pytest.raises(ValueError, match="kind"):
        EncoderRun("teach", tiny_world, tmp_path / "y", STUDENT, train(1))
    no_hidden = tmp_path / "no_hidden.parquet"
    pq.write_table(pq.read_table(labels_path).drop_columns(["hidden"]), no_hidden)
    with pytest.raises(ValueError, match="'hidden' column"):
        EncoderRun("distill", tiny_world, tmp_path / "z", STUDENT, train(1, hidden_weight=1.0),
                   no_hidden)  # fmt: skip
