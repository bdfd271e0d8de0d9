import json

import numpy as np
import pytest

from prectr.encoder.teacher import ConcatTeacher, HeadConfig, adapt, load_teacher
from prectr.encoder.teachers.concat import log_softmax
from tests.encoder.teacher_models import CountingTeacher, tiny_llm_dir, tiny_sentence_dir


def test_side_by_side_concatenates_hidden_states_and_averages_log_probabilities():
    a, b = CountingTeacher(hidden_size=6), CountingTeacher(hidden_size=5, salt="b")
    both = ConcatTeacher([a, b])
    assert both.hidden_size == 11 and both.name == "counting+counting"
    logits, hidden = both.encode(["oak chair", "sofa"], ["red chair", "lamp"])
    (la, ha), (lb, hb) = (
        a.encode(["oak chair", "sofa"], ["red chair", "lamp"]),
        b.encode(["oak chair", "sofa"], ["red chair", "lamp"]),
    )
    np.testing.assert_array_equal(hidden, np.hstack([ha, hb]))
    np.testing.assert_allclose(logits, (log_softmax(la) + log_softmax(lb)) / 2, atol=1e-6)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    product = np.exp(log_softmax(la) + log_softmax(lb))
    np.testing.assert_allclose(
        probabilities, np.sqrt(product) / np.sqrt(product).sum(1, keepdims=True), atol=1e-6
    )
    np.testing.assert_array_equal(both.hidden(["oak chair", "sofa"], ["red chair", "lamp"]), hidden)
    assert both.fingerprint()["parts"] == [a.fingerprint(), b.fingerprint()]
    with pytest.raises(ValueError, match="at least two"):
        ConcatTeacher([a])
    assert both.dtype is None
    a.dtype = "bfloat16"  # a language model beside teachers without a dtype sets the pair's
    assert ConcatTeacher([a, b]).dtype == "bfloat16"
    b.dtype = "float32"
    with pytest.raises(ValueError, match="run in bfloat16 and float32: side by side"):
        ConcatTeacher([a, b])


def test_teachers_joined_by_plus_load_and_adapt(tiny_world, tmp_path):
    llm, sentence = tiny_llm_dir(tmp_path), tiny_sentence_dir(tmp_path)
    spec = f"{llm}+{sentence}"
    teacher = load_teacher(spec)
    assert isinstance(teacher, ConcatTeacher) and teacher.hidden_size == 32 + 4 * 16
    adapted, _ = adapt(tiny_world, spec, tmp_path / "adapted", max_pairs=60,
                       config=HeadConfig(hidden=8, max_epochs=3), progress=False)  # fmt: skip
    meta = json.loads((tmp_path / "adapted" / "teacher.json").read_text())
    assert meta["base"] == f"{llm.resolve()}+{sentence.resolve()}"
    loaded = load_teacher(tmp_path / "adapted")
    expected = adapted.grade_logits(["sofa"], ["oak chair"])
    np.testing.assert_allclose(loaded.grade_logits(["sofa"], ["oak chair"]), expected, atol=1e-5)
    # adapted on bfloat16 (int8) states, the pair is reloaded in bfloat16 (int8), whatever
    # dtype is asked
    for dtype in ("bfloat16", "int8"):
        fast, _ = adapt(tiny_world, spec, tmp_path / dtype, max_pairs=60, dtype=dtype,
                        config=HeadConfig(hidden=8, max_epochs=3), progress=False)  # fmt: skip
        assert fast.dtype == dtype
        again = load_teacher(tmp_path / dtype, dtype="float32")
        assert again.base.teachers[0].dtype == dtype
        assert again.fingerprint() == fast.fingerprint()
        np.testing.assert_array_equal(again.grade_logits(["sofa"], ["oak chair"]),
                                      fast.grade_logits(["sofa"], ["oak chair"]))  # fmt: skip
    # a head fitted on int8 states of another scheme (one scale per layer input) is refused
    meta_path = tmp_path / "int8" / "teacher.json"
    meta = json.loads(meta_path.read_text())
    del meta["int8"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="int8 states of another scheme"):
        load_teacher(tmp_path / "int8")
