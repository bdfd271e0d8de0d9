"""PRECTR reading query and title through the student or a frozen encoder's cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from prectr.config import experiment_from_dict
from prectr.data.dataset import Collator
from prectr.data.features import FeatureConfig, FeatureEncoder
from prectr.data.schema import read_log
from prectr.data.shards import time_split, write_impressions
from prectr.data.stream import BatchStream
from prectr.encoder.student import save_student
from prectr.models.registry import build_model
from prectr.modules.text import training_dtype
from prectr.train.predict import predict
from prectr.train.run import load_trained
from prectr.train.trainer import Trainer, param_groups
from tests.encoder.conftest import fake_embed, tiny_student
from tests.models.test_models import LogitOf, inputs


@pytest.fixture(scope="module")
def encoded(tiny_world: Path, student_dir: Path, cache_path: Path, tmp_path_factory):
    log = read_log(tiny_world)
    split = time_split(log.requests)
    features = FeatureConfig(relevance_context=True, student=str(student_dir), query_pieces=6,
                             title_pieces=16, text_cache=str(cache_path))  # fmt: skip
    encoder = FeatureEncoder(features).fit(log, split["train"])
    encoded = encoder.encode(log)
    path = write_impressions(encoded.impressions, tmp_path_factory.mktemp("e2e") / "all.parquet")
    batches = BatchStream(path, Collator(encoded), batch_size=256, seed=0).epoch()
    return encoded, next(batches), next(batches)


def build(encoded, name: str = "prectr_v2", **params):
    torch.manual_seed(0)
    return build_model(name, encoded[0].specs, encoded[0].vocab_sizes, params)


def test_the_student_trains_end_to_end_at_the_encoder_learning_rate(encoded, student_dir):
    model = build(encoded, text_encoder="student", student=str(student_dir))
    config = experiment_from_dict(
        {
            "model": "prectr_v2",
            "train": {"lr_encoder": 1e-5},
            "features": {"relevance_context": True},
        }
    )
    groups = {g["name"]: g for g in param_groups(model, config)}
    student = {id(p) for p in model.rsl.text.text_encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == student
    assert groups["encoder"]["lr"] == 1e-5
    assert "piece" not in model.base_ctr.embedding.tables  # its inputs are the encoder's alone
    batch = encoded[1]
    model.loss(batch, model(batch))["loss"].backward()
    assert all(p.grad is not None for p in model.rsl.text.text_encoder.parameters())


def test_the_two_model_fusion_reads_the_text_through_the_student_as_prectr_does(
    encoded, student_dir
):
    """The fusion's relevance classifier reads the student, trained at the encoder's rate; its
    CTR model does not read the student's pieces."""
    model = build(encoded, "two_model", text_encoder="student", student=str(student_dir))
    config = experiment_from_dict({"model": "two_model", "train": {"lr_encoder": 1e-5}})
    groups = {g["name"]: g for g in param_groups(model, config)}
    student = {id(p) for p in model.relevance.text.text_encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == student
    assert "piece" not in model.ctr.embedding.tables
    assert "piece" in build(encoded, "dnn").tower.embedding.tables  # DNN reads every feature
    batch = encoded[1]
    model.loss(batch, model(batch))["loss_relevance"].backward()
    assert all(p.grad is not None for p in model.relevance.text.text_encoder.parameters())


def test_a_frozen_student_gets_no_gradient_and_stays_in_inference_mode(encoded, student_dir):
    model = build(encoded, text_encoder="student", student=str(student_dir), frozen_encoder=True)
    model.train()
    assert not model.rsl.text.text_encoder.training
    batch = encoded[1]
    model.loss(batch, model(batch))["loss"].backward()
    assert all(p.grad is None for p in model.rsl.text.text_encoder.parameters())
    config = experiment_from_dict({"model": "prectr_v2", "features": {"relevance_context": True}})
    assert "encoder" not in {g["name"] for g in param_groups(model, config)}


def test_a_student_with_fixed_lower_layers_trains_only_the_layers_above(encoded, student_dir):
    model = build(encoded, text_encoder="student", student=str(student_dir),
                  student_frozen_layers=1)  # fmt: skip
    student = model.rsl.text.text_encoder
    model.train()
    assert not student.encoder.layers[0].training and student.head.training
    batch = encoded[1]
    model.loss(batch, model(batch))["loss"].backward()
    trained = {n for n, p in student.named_parameters() if p.grad is not None}
    assert trained == {n for n, p in student.named_parameters() if p.requires_grad}
    assert "head.weight" in trained and not any(n.startswith("encoder.layers.0.") for n in trained)
    assert student._kept  # the fixed layer's output of each distinct text of the batch
    config = experiment_from_dict({"model": "prectr_v2", "features": {"relevance_context": True}})
    groups = {g["name"]: g for g in param_groups(model, config)}
    assert {id(p) for p in groups["encoder"]["params"]} == {
        id(p) for p in student.parameters() if p.requires_grad
    }
    with pytest.raises(ValueError, match="student_frozen_layers is the student's"):
        build(encoded, student_frozen_layers=1)  # the bag encoder has no layers to fix


def test_a_student_reusing_states_holds_them_in_training_and_only_there(encoded, student_dir):
    model = build(encoded, text_encoder="student", student=str(student_dir),
                  student_reuse_steps=2)  # fmt: skip
    student = model.rsl.text.text_encoder
    batch = encoded[1]
    model.train()
    model.loss(batch, model(batch))["loss"].backward()  # pass 1: every text afresh
    assert student.reuse_steps == 2 and student._reused
    assert all(p.grad is not None for p in student.parameters())
    model.zero_grad(set_to_none=True)
    model.loss(batch, model(batch))["loss"].backward()  # pass 2: every text held
    assert student.pieces.weight.grad is None and student.head.weight.grad is not None
    held = dict(student._reused)
    with torch.no_grad():
        model.eval()(batch)
    assert student._reused.keys() == held.keys()  # scoring neither reads nor adds
    with pytest.raises(ValueError, match="student_reuse_steps is the student's"):
        build(encoded, student_reuse_steps=2)
    with pytest.raises(ValueError, match="needs a student trained end to end"):
        build(encoded, text_encoder="student", student=str(student_dir), frozen_encoder=True,
              student_reuse_steps=2)  # fmt: skip


def test_the_student_trains_in_bf16_autocast_and_scores_in_float32(encoded, student_dir):
    student = str(student_dir)
    full = build(encoded, text_encoder="student", student=student, encoder_precision="fp32")
    half = build(encoded, text_encoder="student", student=student, encoder_precision="bf16")
    frozen = [build(encoded, text_encoder="student", student=student, frozen_encoder=True,
                    encoder_precision=p).rsl.text for p in ("fp32", "bf16")]  # fmt: skip
    batch = encoded[1]
    with torch.no_grad():  # training mode: bfloat16 products, rounded but close, float32 out
        trained = full.rsl.text(batch), half.rsl.text(batch)
        assert trained[1].dtype == torch.float32 and not torch.equal(*trained)
        torch.testing.assert_close(*trained, rtol=0.05, atol=0.05)
        assert torch.equal(frozen[0](batch), frozen[1](batch))  # a frozen student: float32
    half.loss(batch, half(batch))["loss"].backward()
    grads = [p.grad for p in half.rsl.text.text_encoder.parameters()]
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():  # scoring: float32, the same numbers
        assert torch.equal(full.eval().rsl.text(batch), half.eval().rsl.text(batch))
    with pytest.raises(ValueError, match=r"encoder_precision\n.*input_value='fp16'"):
        build(encoded, text_encoder="student", student=student, encoder_precision="fp16")


@pytest.mark.parametrize(("avx512_bf16", "amx", "device", "dtype"), [
    (True, False, "cpu", torch.bfloat16), (False, True, "cpu", torch.bfloat16),
    (False, False, "cpu", torch.float32), (True, True, "cuda", torch.float32),
])  # fmt: skip
def test_auto_precision_is_bf16_where_the_processor_multiplies_it_natively(
    monkeypatch, avx512_bf16, amx, device, dtype
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert training_dtype("auto", torch.device(device)) == dtype
    assert training_dtype("fp32", torch.device("cpu")) == torch.float32
    assert training_dtype("bf16", torch.device(device)) == torch.bfloat16


def test_a_batch_encodes_each_distinct_pair_once(encoded, student_dir):
    model = build(encoded, text_encoder="student", student=str(student_dir))
    batch = encoded[1]
    sizes = []
    student = model.rsl.text.text_encoder
    encode = student.encode
    student.encode = lambda ids, segment: sizes.append(ids.shape[0]) or encode(ids, segment)
    model(batch)
    pairs = torch.cat([batch.sequences["query_pieces"], batch.sequences["title_pieces"]], 1)
    assert sizes == [torch.unique(pairs, dim=0).shape[0]] and sizes[0] < len(batch)


def test_the_frozen_cache_reads_each_texts_own_embedding(encoded, tiny_world, cache_path):
    model = build(encoded, "prectr_v1", text_encoder="cache", text_cache=str(cache_path))
    batch = encoded[1]
    assert model(batch)["logit"].shape == (len(batch),)
    assert not any("text" in n and p.requires_grad for n, p in model.named_parameters())
    items = pq.read_table(tiny_world / "items.parquet")
    first = int(batch.item[0])
    title_id = int(batch.sequences["title_text"][0, 0])
    np.testing.assert_allclose(model.rsl.text.table[title_id].numpy(),
                               fake_embed([items["title"][first].as_py()])[0])  # fmt: skip


def test_missing_or_mismatched_text_features_are_refused(encoded, student_dir, tmp_path):
    plain = [s for s in encoded[0].specs if s.name not in ("query_pieces", "title_pieces")]
    with pytest.raises(ValueError, match=r"StudentText reads .*: text\.query_pieces"):
        build_model("prectr_v2", plain, encoded[0].vocab_sizes,
                    {"text_encoder": "student", "student": str(student_dir)})  # fmt: skip
    sizes = {**encoded[0].vocab_sizes, "piece": 7}
    with pytest.raises(ValueError, match="same student"):
        build_model("prectr_v2", encoded[0].specs, sizes,
                    {"text_encoder": "student", "student": str(student_dir)})  # fmt: skip
    with pytest.raises(ValueError, match=r"model_params\.student"):
        build(encoded, text_encoder="student")
    with pytest.raises(ValueError, match=r"text_encoder\n.*Input should be 'bag', 'student' or"):
        build(encoded, text_encoder="bert")


def test_features_read_the_students_piece_limits_unless_set(student_dir):
    own = FeatureEncoder(FeatureConfig(student=str(student_dir))).config
    assert (own.query_pieces, own.title_pieces) == (6, 16)  # the tiny student's
    fewer = FeatureEncoder(FeatureConfig(student=str(student_dir), query_pieces=4)).config
    assert (fewer.query_pieces, fewer.title_pieces) == (4, 16)


@pytest.mark.slow
def test_a_run_with_the_student_trains_and_reloads(tiny_world, student_dir, tmp_path):
    student = str(student_dir)
    config = experiment_from_dict({
        "model": "prectr_v2",
        "model_params": {"text_encoder": "student", "student": student},
        "features": {"relevance_context": True, "student": student},  # its piece limits
        "data": {"log": str(tiny_world), "batch_size": 512},
        "train": {"epochs": 1, "log_every": 5},
    })  # fmt: skip
    trainer = Trainer(config, tmp_path / "run")
    before = [p.detach().clone() for p in trainer.model.rsl.text.text_encoder.parameters()]
    result = trainer.fit()
    after = list(trainer.model.rsl.text.text_encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert result["best_valid"]["auc"] > 0.5
    run = load_trained(tmp_path / "run", "last")
    stream = trainer.data.stream("valid", config, shuffle=False)
    torch.testing.assert_close(predict(run.model, stream.epoch())["score"],
                               predict(trainer.model, stream.epoch())["score"])  # fmt: skip


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("mode", ["cross", "two_tower"])
def test_the_student_model_exports_and_matches_eager_on_another_batch(
    encoded, student_dir, tokenizer, tmp_path, mode
):
    """Tracing and export skip the data-dependent shortcuts (packing, distinct rows); the
    graph then gives what eager PyTorch gives, whatever the batch. The two-tower student is
    the default one, reading the pair's piece overlap (the same tokenizer and piece limits as
    the features')."""
    if mode == "two_tower":
        student = tiny_student(tokenizer.vocab_size, "two_tower")
        assert student.config.piece_overlap
        student_dir = save_student(tmp_path / "two_tower", student, tokenizer)
    model = build(encoded, text_encoder="student", student=str(student_dir)).eval()
    batch, other = encoded[1], encoded[2]
    wrapped = LogitOf(model, batch)
    rows = {0: torch.export.Dim("batch")}
    shapes = (rows, rows, tuple(rows for _ in batch.sequences))
    exported = torch.export.export(wrapped, inputs(batch), dynamic_shapes=shapes).module()
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, inputs(batch))
        eager = wrapped(*inputs(other))
        torch.testing.assert_close(exported(*inputs(other)), eager, atol=1e-5, rtol=0)
        torch.testing.assert_close(traced(*inputs(other)), eager, atol=1e-5, rtol=0)
