import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from prectr.data.schema import read_log
from prectr.data.shards import time_split
from prectr.encoder.distill import EncoderRun, EncoderTrainConfig
from prectr.encoder.evaluate import evaluate_held_out, grade_metrics, grade_probabilities
from prectr.encoder.pairs import read_teacher_labels
from prectr.encoder.student import Student, StudentConfig, load_student, save_student
from prectr.text.tokenizer import TextTokenizer
from prectr.train.checkpoint import load_checkpoint
from prectr.train.stages import StopTraining
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


def test_a_store_of_hidden_states_alone_is_refused_saying_what_it_is(pairs, tmp_path) -> None:
    """``teacher adapt``'s store of its base's hidden states holds no logits to distil."""
    table = pa.table({"query": ["a"], "title": ["b"], "hidden": [[0.0] * 8]})
    pq.write_table(table, tmp_path / "part-00000.parquet")
    (tmp_path / "meta.json").write_text('{"teacher": {}, "hidden": true, "logits": false}')
    with pytest.raises(ValueError, match="hidden states only, no grade logits"):
        read_teacher_labels(tmp_path, pairs)


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


def killed_and_resumed(log, out, settings: EncoderTrainConfig, **args) -> EncoderRun:
    """A distillation into ``out`` killed after step 4 (its last checkpoint: step 3), and the
    run that resumes it, not yet fitted."""
    killed = EncoderRun("distill", log, out, train=settings, stop_after=4, **args)
    with pytest.raises(StopTraining):
        killed.fit()
    return EncoderRun("distill", log, out, train=settings, resume=True, **args)


def test_distillation_resumes_exactly_after_a_kill(
    tiny_world, labels_path, tokenizer, tmp_path
) -> None:
    shared = tokenizer.save(tmp_path / "tokenizer.json")
    args = dict(student=STUDENT, labels=labels_path, tokenizer=shared)
    whole = EncoderRun("distill", tiny_world, tmp_path / "whole", train=train(7), **args)
    whole.fit()
    resumed = killed_and_resumed(tiny_world, tmp_path / "killed", train(7), **args)
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
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["steps"] == 40
    student, tokenizer = load_student(tmp_path / "d" / "student")
    assert student.config.vocab_size == run.tokenizer.vocab_size
    # the held-out figures are the exported student's, on the 20 pools any seed draws
    held, again = result["held_out"], evaluate_held_out(student, tokenizer, run.pairs, 20)
    assert held["requests"] == 20 and held.keys() == again.keys()
    for name, value in held.items():
        assert value == pytest.approx(again[name], abs=1e-6, nan_ok=True), name


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
    losses = [e["loss"] for e in log if e["split"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not (tmp_path / "sft" / "tokenizer.json").exists()  # the init student's tokenizer


@pytest.mark.parametrize("kind", ["distill", "sft"])
def test_bf16_precision_runs_the_students_passes_in_bfloat16_and_its_losses_in_float32(
    kind, tiny_world, labels_path, student_dir, tmp_path
) -> None:
    init = student_dir if kind == "sft" else None
    run = EncoderRun(kind, tiny_world, tmp_path / kind, train=train(2, precision="bf16",
                     hidden_weight=0.5 if kind == "distill" else 0.0), labels=labels_path,
                     init=init)  # fmt: skip
    seen = []
    run.student.head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    losses = run.loss(np.arange(8))
    assert seen == [torch.bfloat16]
    assert {loss.dtype for loss in losses.values()} == {torch.float32}
    assert {p.dtype for p in run.student.parameters()} == {torch.float32}
    if kind == "sft":  # validation, between training steps, stays float32
        run._validate()
        assert seen[-1] == torch.float32
    config = json.loads((tmp_path / kind / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"


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


def test_a_student_takes_the_piece_limits_its_tokenizer_chose(tiny_world, tmp_path) -> None:
    unset = StudentConfig(**{**TINY, "query_length": None, "title_length": None})
    run = EncoderRun("sft", tiny_world, tmp_path / "sft", unset, train(2))
    tokenizer = TextTokenizer.load(tmp_path / "sft" / "tokenizer.json")
    c = run.student.config
    assert (c.query_length, c.title_length) == (tokenizer.query_length, tokenizer.title_length)
    result = run.fit()
    assert result["truncated"] == tokenizer.truncated  # chosen on the same training texts
    assert max(result["truncated"].values()) <= 0.02
    assert load_student(tmp_path / "sft" / "student")[0].config.query_length == c.query_length
    # a tokenizer saved before limits existed has them chosen on the log's training days
    legacy = tmp_path / "legacy.json"
    legacy.write_text(tokenizer.tokenizer.to_str())  # a bare tokenizers file
    assert TextTokenizer.load(legacy).query_length is None
    old = EncoderRun("sft", tiny_world, tmp_path / "old", unset, train(2), tokenizer=legacy)
    assert (old.student.config.query_length, old.student.config.title_length) == (
        c.query_length, c.title_length
    )  # fmt: skip


def test_sft_validates_on_the_pairs_of_hashed_queries_kept_out_of_training(
    tiny_world, student_dir, tmp_path
) -> None:
    run = EncoderRun("sft", tiny_world, tmp_path / "a", train=train(2), init=student_dir)
    again = EncoderRun("sft", tiny_world, tmp_path / "b", train=train(2), init=student_dir)
    valid, kept = set(run.valid.query), set(run.samples.query)
    assert valid and kept and not valid & kept  # whole queries, on one side only
    assert valid == set(again.valid.query)  # the same split in every run
    graded = run.pairs.labelled.num_rows
    assert run.valid.query.size + run.samples.query.size == graded
    assert 0.02 < run.valid.query.size / graded < 0.3  # about valid_share = 0.1 of them
    none = EncoderRun("sft", tiny_world, tmp_path / "c", train=train(2, valid_share=0.0),
                      init=student_dir)  # fmt: skip
    assert none.valid is None and none.samples.query.size == graded
    with pytest.raises(ValueError, match=r"loss\s+Input should be 'ce', 'weighted' or 'ordinal'"):
        train(2, loss="focal")


def test_sft_stops_early_and_exports_the_best_validated_student(
    tiny_world, student_dir, tmp_path
) -> None:
    still = train(40, lr=0.0, weight_decay=0.0, valid_every=2, patience=3)
    frozen = EncoderRun("sft", tiny_world, tmp_path / "frozen", init=student_dir, train=still)
    result = frozen.fit()  # a student that cannot improve: the first score stays the best
    assert result["stopped_early"] and result["steps"] == 8  # scored at 2, then 4, 6, 8
    assert result["validation"]["step"] == 2
    run = EncoderRun("sft", tiny_world, tmp_path / "sft", init=student_dir,
                     train=train(24, valid_every=3, patience=0))  # fmt: skip
    result = run.fit()
    log = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").open()]
    scores = [(e["macro_f1"], -e["step"]) for e in log if e["split"] == "valid"]
    assert len(scores) == 8 and not result["stopped_early"]
    assert result["validation"]["step"] == -max(scores)[1]  # the first of the best scores
    best = load_checkpoint(tmp_path / "sft" / "checkpoints" / "best.pt")["student"]
    exported, _ = load_student(tmp_path / "sft" / "student")
    for a, b in zip(best.values(), exported.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert metrics["validation"]["macro_f1"] == max(scores)[0]
    assert {f"recall@{g}" for g in range(4)} <= set(metrics["validation"])


def test_sft_can_keep_the_student_of_the_best_spearman_and_records_the_choice_only_then(
    tiny_world, student_dir, tmp_path
) -> None:
    settings = train(40, valid_every=2, lr=1e-2, patience=0, select="spearman")
    run = EncoderRun("sft", tiny_world, tmp_path / "sft", init=student_dir, train=settings)
    result = run.fit()
    log = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").open()]
    valid = [e for e in log if e["split"] == "valid" and not np.isnan(e["spearman"])]
    scores = [(e["spearman"], -e["step"]) for e in valid]
    f1 = [(e["macro_f1"], -e["step"]) for e in valid]
    assert result["validation"]["step"] == -max(scores)[1]  # the first of the best Spearmans
    assert max(scores)[1] != max(f1)[1]  # not the student macro-F1 would have kept
    metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert metrics["validation"]["spearman"] == max(scores)[0]
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["train"]["select"] == (
        "spearman"
    )
    assert result["select"] == "spearman"
    f1 = train(1, select="macro_f1")  # the default before the option existed
    EncoderRun("sft", tiny_world, tmp_path / "plain", init=student_dir, train=f1)
    recorded = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "select" not in recorded["train"]  # as runs recorded before the option existed
    EncoderRun("sft", tiny_world, tmp_path / "plain", init=student_dir, train=f1,
               resume=True)  # such a run resumes with --select-on macro_f1  # fmt: skip
    with pytest.raises(ValueError, match="settings differ"):  # not at today's default
        EncoderRun("sft", tiny_world, tmp_path / "plain", init=student_dir, train=train(1),
                   resume=True)  # fmt: skip


def test_sft_can_keep_the_student_of_the_best_sum_of_macro_f1_and_spearman(
    tiny_world, student_dir, tmp_path
) -> None:
    others = set()  # the figures whose own pick differed from the sum's in some run
    for lr in (1e-2, 3e-3):  # runs where the sum's pick is not macro-F1's, and not Spearman's
        settings = train(40, valid_every=2, lr=lr, patience=0, select="macro_f1+spearman")
        out = tmp_path / f"sft{lr}"
        result = EncoderRun("sft", tiny_world, out, init=student_dir, train=settings).fit()
        log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
        valid = [e for e in log if e["split"] == "valid" and not np.isnan(e["spearman"])]
        for e in valid:  # the validation log carries the sum it selects on
            assert e["macro_f1+spearman"] == pytest.approx(e["macro_f1"] + e["spearman"])
        sums = [(e["macro_f1"] + e["spearman"], -e["step"]) for e in valid]
        assert result["validation"]["step"] == -max(sums)[1]  # the first of the best sums
        assert result["select"] == "macro_f1+spearman"
        for figure in ("macro_f1", "spearman"):
            if max((e[figure], -e["step"]) for e in valid)[1] != max(sums)[1]:
                others.add(figure)
    assert others == {"macro_f1", "spearman"}


def test_sft_can_draw_each_pair_as_often_as_the_log_grades_it(
    tiny_world, student_dir, tmp_path
) -> None:
    pairs = EncoderRun("sft", tiny_world, tmp_path / "p", train=train(2), init=student_dir)
    rows = EncoderRun("sft", tiny_world, tmp_path / "r", train=train(2, pair_weight="rows"),
                      init=student_dir)  # fmt: skip
    np.testing.assert_array_equal(pairs.samples.epoch_rows(), np.arange(pairs.samples.query.size))
    # the same pairs on each side of the validation split, drawn once per graded row
    np.testing.assert_array_equal(rows.samples.query, pairs.samples.query)
    labelled = rows.pairs.labelled
    keys = zip(labelled["query"].to_numpy(), labelled["title"].to_numpy(), strict=True)
    graded_rows = dict(zip(keys, labelled["rows"].to_numpy(), strict=True))
    s = rows.samples
    expected = [graded_rows[q, t] for q, t in zip(s.query, s.title, strict=True)]
    np.testing.assert_array_equal(np.bincount(s.epoch_rows(), minlength=s.query.size), expected)
    assert max(expected) > 1  # the tiny world shows some pairs more than once
    # the tiny world's graded rows, less the validation queries' and the held-out day's
    valid = rows.valid
    held_out_free = rows.pairs.labelled["rows"].to_numpy().sum()
    assert s.epoch_rows().size + valid.epoch_rows().size == held_out_free
    result = rows.fit()
    assert result["rows_per_epoch"] == s.epoch_rows().size and result["pair_weight"] == "rows"
    shares = np.bincount(s.target.numpy(), weights=expected, minlength=4) / sum(expected)
    np.testing.assert_allclose(result["train_grades"], shares, atol=1e-4)
    assert result["validation"]["pairs"] == valid.epoch_rows().size  # validation weighted alike
    with pytest.raises(ValueError, match=r"pair_weight\s+Input should be 'pairs' or 'rows'"):
        train(2, pair_weight="queries")


def test_the_weighted_and_ordinal_losses(tiny_world, student_dir, tmp_path) -> None:
    run = EncoderRun("sft", tiny_world, tmp_path / "w", train=train(2, loss="weighted"),
                     init=student_dir)  # fmt: skip
    counts = np.bincount(run.samples.target.numpy(), minlength=4)
    weight = run.class_weight.numpy()
    present = counts > 0
    np.testing.assert_allclose(weight[present] * counts[present], counts.sum() / 4, rtol=1e-5)
    grades = torch.tensor([0, 3])
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    plain = torch.nn.functional.cross_entropy(logits, grades, reduction="none")
    expected = (plain * run.class_weight[grades]).sum() / run.class_weight[grades].sum()
    torch.testing.assert_close(run._sft_loss(logits, grades), expected)
    ordinal = EncoderRun("sft", tiny_world, tmp_path / "o", train=train(2, loss="ordinal"),
                         init=student_dir)  # fmt: skip
    near = ordinal._sft_loss(torch.tensor([[0.0, 0.0, 5.0, 0.0]]), torch.tensor([3]))
    far = ordinal._sft_loss(torch.tensor([[5.0, 0.0, 0.0, 0.0]]), torch.tensor([3]))
    assert near < far  # grade 2 for a 3 costs less than grade 0 (plain CE: the same)


def test_grade_metrics_expose_a_majority_predictor() -> None:
    grades = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 3])
    majority = np.tile([0.7, 0.1, 0.1, 0.1], (10, 1))
    m = grade_metrics(majority, grades)
    assert m["accuracy"] == 0.6 and [m[f"recall@{g}"] for g in range(4)] == [1.0, 0.0, 0.0, 0.0]
    assert m["macro_f1"] == pytest.approx((2 * 6 / 16) / 4)  # F1 of grade 0 is 0.75, others 0
    perfect = np.eye(4)[grades]
    assert grade_metrics(perfect, grades)["macro_f1"] == 1.0


def test_massive_teacher_activations_do_not_drown_the_kl(
    tiny_world, labels_path, tokenizer, tmp_path
) -> None:
    """A language model's hidden state has a few huge, nearly constant dimensions; matched raw,
    they took the hidden MSE's gradient and, under clipping, the KL's, and the distilled
    student ranked held-out pools at chance. Matched standardised, the KL falls as it does
    without the hidden MSE, and the student ranks held-out pairs above chance."""
    table = pq.read_table(labels_path)
    logits = np.asarray(table["logits"].to_pylist(), np.float32)
    noise = np.random.default_rng(0).normal(size=(table.num_rows, 4)).astype(np.float32)
    hidden = pa.array(list(np.concatenate([logits, 100.0 + noise], 1)), pa.list_(pa.float32()))
    path = tmp_path / "labels.parquet"
    pq.write_table(table.set_column(table.column_names.index("hidden"), "hidden", hidden), path)
    shared = tokenizer.save(tmp_path / "tokenizer.json")
    kl, held = {}, {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"hidden{weight}"
        run = EncoderRun("distill", tiny_world, out, STUDENT,
                         train(60, hidden_weight=weight, eval_requests=100), path,
                         tokenizer=shared)  # fmt: skip
        held[weight] = run.fit()["held_out"]["spearman"]
        log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
        kl[weight] = np.mean([e["loss_kl"] for e in log[-5:]])
    assert kl[1.0] < 1.1 * kl[0.0]
    assert held[1.0] > 0


def test_piece_overlap_is_recorded_only_when_on_and_asked_against_an_init_of_another_shape_refused(
    tiny_world, tokenizer, tmp_path
) -> None:
    """A run records the option only when on, so runs started before it existed resume (off,
    as they were); and --init brings its own shape, so asking for the option on a student
    without it, or turning it off on one with it, fails, while the default (on for two towers)
    gives way to the student's own."""
    plain = StudentConfig(**TINY, piece_overlap=False)
    EncoderRun("sft", tiny_world, tmp_path / "plain", plain, train(1))
    recorded = json.loads((tmp_path / "plain" / "config.json").read_text())["student"]
    assert "piece_overlap" not in recorded and recorded["mode"] == plain.mode
    EncoderRun("sft", tiny_world, tmp_path / "plain", plain, train(1), resume=True)
    with pytest.raises(ValueError, match="settings differ"):  # the default is on now
        EncoderRun("sft", tiny_world, tmp_path / "plain", STUDENT, train(1), resume=True)
    EncoderRun("sft", tiny_world, tmp_path / "overlap", STUDENT, train(1))
    assert json.loads((tmp_path / "overlap" / "config.json").read_text())["student"][
        "piece_overlap"
    ]
    shape = {**TINY, "vocab_size": tokenizer.vocab_size}  # two-tower students, saved
    without = save_student(tmp_path / "without", Student(StudentConfig(**shape,
                           piece_overlap=False)), tokenizer)  # fmt: skip
    with_it = save_student(tmp_path / "with", Student(StudentConfig(**shape)), tokenizer)
    asked = StudentConfig(**TINY, piece_overlap=True)
    with pytest.raises(ValueError, match=r"asked for, but .* built without it"):
        EncoderRun("sft", tiny_world, tmp_path / "init", asked, train(1), init=without)
    assert not (tmp_path / "init").exists()  # refused before the run was claimed: rerun freely
    with pytest.raises(ValueError, match=r"turned off, but .* built with it"):
        EncoderRun("sft", tiny_world, tmp_path / "init", plain, train(1), init=with_it)
    run = EncoderRun("sft", tiny_world, tmp_path / "init", STUDENT, train(1), init=without)
    assert not run.student.config.piece_overlap  # the default gave way to the student's own


def test_overlap_skip_is_recorded_only_when_on_and_asked_against_an_init_of_another_shape_refused(
    tiny_world, tokenizer, tmp_path
) -> None:
    off = StudentConfig(**TINY, overlap_skip=False)
    EncoderRun("sft", tiny_world, tmp_path / "plain", off, train(1))
    recorded = json.loads((tmp_path / "plain" / "config.json").read_text())["student"]
    assert "overlap_skip" not in recorded  # off: as runs recorded before the option existed
    EncoderRun("sft", tiny_world, tmp_path / "plain", off, train(1), resume=True)
    with pytest.raises(ValueError, match="settings differ"):  # on by default now
        EncoderRun("sft", tiny_world, tmp_path / "plain", STUDENT, train(1), resume=True)
    skip = StudentConfig(**TINY, overlap_skip=True)
    EncoderRun("sft", tiny_world, tmp_path / "skip", skip, train(1))
    assert json.loads((tmp_path / "skip" / "config.json").read_text())["student"]["overlap_skip"]
    assert StudentConfig(**TINY).overlap_skip  # the default for two towers
    assert not StudentConfig(**TINY, piece_overlap=False).overlap_skip  # none to map: off
    assert not StudentConfig(mode="cross").overlap_skip
    shape = {**TINY, "vocab_size": tokenizer.vocab_size}
    plain = Student(StudentConfig(**shape, overlap_skip=False))
    without = save_student(tmp_path / "without", plain, tokenizer)
    with_it = save_student(tmp_path / "with", Student(StudentConfig(**shape)), tokenizer)
    with pytest.raises(ValueError, match=r"overlap_skip asked for, but .* built without it"):
        EncoderRun("sft", tiny_world, tmp_path / "init", skip, train(1), init=without)
    with pytest.raises(ValueError, match=r"overlap_skip turned off, but .* built with it"):
        EncoderRun("sft", tiny_world, tmp_path / "init", off, train(1), init=with_it)
    run = EncoderRun("sft", tiny_world, tmp_path / "init", STUDENT, train(1), init=without)
    assert run.student.overlap_skip is None  # the default gave way to the student's own


def test_ema_decay_exports_the_moving_average_of_the_weights_and_resumes_exactly(
    tiny_world, labels_path, tokenizer, tmp_path
) -> None:
    shared = tokenizer.save(tmp_path / "tokenizer.json")
    args = dict(student=STUDENT, labels=labels_path, tokenizer=shared)
    plain = EncoderRun("distill", tiny_world, tmp_path / "plain", train=train(7), **args)
    weights = []  # the student's after every step
    plain.stage = dataclasses.replace(plain.stage, after_step=lambda: weights.append(
        {k: v.clone() for k, v in plain.student.state_dict().items()}))  # fmt: skip
    plain.fit()
    expected = dict(weights[0])
    for w in weights[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * w[k] for k in expected}
    run = EncoderRun("distill", tiny_world, tmp_path / "ema", train=train(7, ema_decay=0.8), **args)
    run.fit()
    exported, _ = load_student(tmp_path / "ema" / "student")
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    assert any(not torch.equal(v, weights[-1][k]) for k, v in exported.state_dict().items())
    recorded = json.loads((tmp_path / "ema" / "config.json").read_text())["train"]
    assert recorded["ema_decay"] == 0.8
    assert "ema_decay" not in json.loads((tmp_path / "plain" / "config.json").read_text())["train"]
    killed_and_resumed(tiny_world, tmp_path / "killed", train(7, ema_decay=0.8), **args).fit()
    resumed, _ = load_student(tmp_path / "killed" / "student")
    for a, b in zip(exported.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_sft_with_ema_decay_validates_and_keeps_the_average(
    tiny_world, student_dir, tmp_path
) -> None:
    settings = train(12, valid_every=3, patience=0, ema_decay=0.9)
    run = EncoderRun("sft", tiny_world, tmp_path / "sft", init=student_dir, train=settings)
    result = run.fit()
    best = load_checkpoint(tmp_path / "sft" / "checkpoints" / "best.pt")
    assert best["state"]["best"]["step"] == result["validation"]["step"]
    exported, tokenizer = load_student(tmp_path / "sft" / "student")
    average = {k.removeprefix("module."): v for k, v in best["average"].items()}
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, average[name])
    assert any(not torch.equal(v, best["student"][k]) for k, v in exported.state_dict().items())
    v, rows = run.valid, run.valid.epoch_rows()  # validation scored the average
    probabilities = grade_probabilities(exported, tokenizer, run.pairs.queries, run.pairs.titles,
                                        v.query, v.title)  # fmt: skip
    scores = grade_metrics(probabilities[rows], v.target.numpy()[rows])
    assert scores["macro_f1"] == pytest.approx(result["validation"]["macro_f1"])
