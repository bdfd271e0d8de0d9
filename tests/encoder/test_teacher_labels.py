import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from prectr.data.schema import read_log
from prectr.encoder.teacher import (
    AdaptedTeacher,
    GradeHead,
    label_pairs,
    labels_for,
    list_column,
    log_pairs,
    read_labels,
)
from tests.encoder.teacher_models import CountingTeacher


def pairs_table(n: int) -> pa.Table:
    return pa.table(
        {"query": [f"q{i % 7}" for i in range(n)], "title": [f"t {i}" for i in range(n)]}
    )


def rows(table: pa.Table, *columns: str):
    return zip(*(table[c].to_pylist() for c in columns), strict=True)


def test_log_pairs_are_the_distinct_pairs_with_their_training_day_human_grade(tiny_world):
    pairs = log_pairs(tiny_world)
    log = read_log(tiny_world)
    imp = log.impressions.join(log.requests.select(["request_id", "query"]), "request_id")
    imp = imp.join(log.items.select(["item_id", "title"]), "item_id")
    assert pairs.num_rows == imp.group_by(["query", "title"]).aggregate([]).num_rows
    heldout = set(rows(log_pairs(tiny_world, "heldout"), "query", "title"))
    human = imp.filter(pc.equal(imp["relevance_source"], "human"))
    graded = {(q, t): r for q, t, r in rows(human, "query", "title", "relevance")}
    graded = {key: r for key, r in graded.items() if key not in heldout}
    got = {(q, t): r for q, t, r in rows(pairs, "query", "title", "relevance") if r is not None}
    # the test day's human grades are left out too, so some graded pairs lose theirs
    assert got.items() <= graded.items() and len(got) > 100


def test_log_pairs_split_and_sample(tiny_world):
    everything = log_pairs(tiny_world)
    adapt = log_pairs(tiny_world, "adapt")
    heldout = log_pairs(tiny_world, "heldout")
    assert adapt.num_rows + heldout.num_rows == everything.num_rows
    assert not set(rows(adapt, "query", "title")) & set(rows(heldout, "query", "title"))
    assert heldout["relevance"].null_count == heldout.num_rows
    human = log_pairs(tiny_world, "adapt", human_only=True)
    assert human["relevance"].null_count == 0 and 0 < human.num_rows < adapt.num_rows
    sample = log_pairs(tiny_world, n_queries=5, max_pairs=40, seed=1)
    assert sample.num_rows == 40 and len(set(sample["query"].to_pylist())) <= 5
    assert log_pairs(tiny_world, n_queries=5, max_pairs=40, seed=1).equals(sample)
    with pytest.raises(ValueError, match="split 'test'"):
        log_pairs(tiny_world, "test")


def test_labels_are_written_in_parts_and_read_back(tmp_path):
    teacher = CountingTeacher()
    pairs = pairs_table(50)
    run = label_pairs(teacher, pairs, tmp_path / "labels", part_size=16, progress=False)
    assert run["pairs"] == 50 and run["computed"] == 50 and run["cached"] == 0
    assert run["pairs_per_s"] > 0
    assert len(list((tmp_path / "labels").glob("part-*.parquet"))) == 4
    labels = read_labels(tmp_path / "labels")
    assert labels.schema.field("logits").type == pa.list_(pa.float32())
    logits, hidden = labels_for(pairs, labels)
    expected_logits, expected_hidden = CountingTeacher().encode(
        pairs["query"].to_pylist(), pairs["title"].to_pylist()
    )
    np.testing.assert_array_equal(logits, expected_logits)
    np.testing.assert_array_equal(hidden, expected_hidden)
    assert list_column(labels, "logits").shape == (50, 4)


def test_a_killed_run_resumes_without_recomputing(tmp_path):
    pairs = pairs_table(100)
    killed = CountingTeacher(fail_after_calls=3)
    with pytest.raises(KeyboardInterrupt):
        label_pairs(killed, pairs, tmp_path / "labels", part_size=20, progress=False)
    assert read_labels(tmp_path / "labels").num_rows == 60  # three whole parts, nothing partial
    assert not list((tmp_path / "labels").glob(".*tmp"))
    resumed = CountingTeacher()
    run = label_pairs(resumed, pairs, tmp_path / "labels", part_size=20, progress=False)
    assert resumed.encoded == 40 and run["cached"] == 60 and run["computed"] == 40
    labels = read_labels(tmp_path / "labels")
    assert sorted(labels["title"].to_pylist()) == sorted(pairs["title"].to_pylist())
    again = CountingTeacher()
    assert label_pairs(again, pairs, tmp_path / "labels", progress=False)["computed"] == 0
    assert again.calls == 0


def test_labels_of_another_teacher_are_refused_unless_overwritten(tmp_path):
    label_pairs(CountingTeacher(), pairs_table(10), tmp_path / "labels", progress=False)
    other = CountingTeacher(salt="other")
    with pytest.raises(ValueError, match="labels of another teacher"):
        label_pairs(other, pairs_table(10), tmp_path / "labels", progress=False)
    run = label_pairs(other, pairs_table(10), tmp_path / "labels", overwrite=True, progress=False)
    assert run["computed"] == 10
    meta = json.loads((tmp_path / "labels" / "meta.json").read_text())
    assert meta["teacher"]["salt"] == "other"


def test_labels_without_hidden_states(tmp_path):
    label_pairs(
        CountingTeacher(), pairs_table(10), tmp_path / "l", keep_hidden=False, progress=False
    )
    labels = read_labels(tmp_path / "l")
    assert labels.column_names == ["query", "title", "logits"]
    assert labels_for(pairs_table(10), labels)[1] is None
    with pytest.raises(ValueError, match="labels without hidden states; resume it the same way"):
        label_pairs(CountingTeacher(), pairs_table(20), tmp_path / "l", progress=False)


class HiddenOnlyTeacher(CountingTeacher):
    """Counts the pairs whose hidden states alone were asked for (:meth:`Teacher.hidden`)."""

    def __init__(self):
        super().__init__()
        self.hidden_only = 0

    def hidden(self, queries, titles):
        self.hidden_only += len(queries)
        return self.encode(queries, titles)[1]


def test_labels_of_hidden_states_alone(tmp_path):
    """Without logits a store asks the teacher for hidden states alone and keeps only them;
    it is read back as such, and refused to a run that wants logits; a store with logits goes
    on with them when only hidden states are asked for."""
    teacher, pairs = HiddenOnlyTeacher(), pairs_table(10)
    label_pairs(teacher, pairs, tmp_path / "h", progress=False, logits=False)
    assert teacher.hidden_only == 10
    labels = read_labels(tmp_path / "h")
    assert labels.column_names == ["query", "title", "hidden"]
    logits, hidden = labels_for(pairs, labels)
    assert logits is None
    np.testing.assert_array_equal(hidden, CountingTeacher().encode(
        pairs["query"].to_pylist(), pairs["title"].to_pylist())[1])  # fmt: skip
    with pytest.raises(ValueError, match="holds hidden states only, no grade logits"):
        label_pairs(CountingTeacher(), pairs_table(20), tmp_path / "h", progress=False)
    with pytest.raises(ValueError, match="must keep the hidden states"):
        label_pairs(teacher, pairs, tmp_path / "x", keep_hidden=False, logits=False)
    label_pairs(CountingTeacher(), pairs, tmp_path / "full", progress=False)
    teacher = HiddenOnlyTeacher()
    label_pairs(teacher, pairs_table(20), tmp_path / "full", progress=False, logits=False)
    assert teacher.hidden_only == 0 and teacher.encoded == 10  # with logits, as it began
    assert read_labels(tmp_path / "full").num_rows == 20


def test_read_labels_names_the_bad_file_and_row(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a labels directory"):
        read_labels(tmp_path)
    label_pairs(CountingTeacher(), pairs_table(10), tmp_path / "l", progress=False)
    with pytest.raises(ValueError, match=r"pair 0 \('nope', 'x'\) has no label"):
        labels_for(pa.table({"query": ["nope"], "title": ["x"]}), read_labels(tmp_path / "l"))
    logits = pa.array([[0.0] * 4, [0.0] * 3], pa.list_(pa.float32()))
    bad = pa.table({"query": ["a", "b"], "title": ["x", "y"], "logits": logits})
    pq.write_table(bad, tmp_path / "l" / "part-00009.parquet")
    with pytest.raises(ValueError, match=r"part-00009.parquet: row 1: logits has 3 values"):
        read_labels(tmp_path / "l")


def test_adapted_teacher_reuses_its_base_hidden_states(tmp_path):
    pairs = pairs_table(30)
    base = CountingTeacher()
    label_pairs(base, pairs.slice(0, 20), tmp_path / "base", progress=False)
    torch.manual_seed(0)
    adapted = AdaptedTeacher(CountingTeacher(), "counting", GradeHead(6, hidden=8), {})
    run = label_pairs(adapted, pairs, tmp_path / "adapted", reuse=tmp_path / "base", progress=False)
    assert run["reused"] == 20 and run["computed"] == 10 and adapted.base.encoded == 10
    logits, hidden = labels_for(pairs, read_labels(tmp_path / "adapted"))
    np.testing.assert_allclose(logits, adapted.adapt(hidden), atol=1e-6)
    direct = adapted.grade_logits(pairs["query"].to_pylist(), pairs["title"].to_pylist())
    np.testing.assert_allclose(logits, direct, atol=1e-6)
    # hidden states of a different base are not reused
    other = AdaptedTeacher(CountingTeacher(salt="x"), "counting", GradeHead(6, hidden=8), {})
    run = label_pairs(other, pairs, tmp_path / "other", reuse=tmp_path / "base", progress=False)
    assert run["reused"] == 0 and run["computed"] == 30


def test_a_teacher_learns_from_no_pair_of_a_hashed_query_split(tmp_path) -> None:
    from prectr.encoder.pairs import PairsConfig
    from tests.encoder.graded_log import graded_log, shop_judgments

    log = graded_log(tmp_path / "log", shop_judgments(40))
    held_out = PairsConfig("query:0.3")
    adapt = log_pairs(log, "adapt", human_only=True, held_out=held_out)
    test = log_pairs(log, "heldout", held_out=held_out)
    assert adapt.num_rows and test.num_rows and adapt.num_rows + test.num_rows == 120
    assert not set(adapt["query"].to_pylist()) & set(test["query"].to_pylist())
    assert adapt["relevance"].null_count == 0 and test["relevance"].null_count == test.num_rows
