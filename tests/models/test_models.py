"""Every registered model: output shapes, finite losses, learning on the tiny world, export."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prectr.models.baselines
import prectr.models.prectr  # noqa: F401  (importing registers every model)
from prectr.data.dataset import Batch
from prectr.metrics import auc
from prectr.models.registry import MODELS, RankingModel, build_model
from prectr.modules.attention import TargetAttention
from tests.models.conftest import World

NAMES = sorted(MODELS)
HISTORY = ("user_clicks", "user_click_categories", "user_click_queries", "user_click_match",
           "crowd_items", "crowd_categories", "crowd_match", "crowd_clicks")  # fmt: skip


def build(world: World, name: str) -> RankingModel:
    torch.manual_seed(0)
    return build_model(name, world.encoded.specs, world.encoded.vocab_sizes)


def without_history(batch: Batch) -> Batch:
    sequences = {k: torch.zeros_like(v) if k in HISTORY else v for k, v in batch.sequences.items()}
    return dataclasses.replace(batch, sequences=sequences)


def test_every_model_is_registered() -> None:
    assert {"lr", "dnn", "deepfm", "dcnv2", "din", "two_model"} <= set(NAMES)
    assert {"prectr_v1", "prectr_v2"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_loss(world: World, batch: Batch, name: str) -> None:
    model = build(world, name)
    out = model(batch)
    assert out["logit"].shape == (len(batch),)
    if "grade_logits" in out:
        assert out["grade_logits"].shape == (len(batch), 4)
    losses = model.loss(batch, out)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("name", "params"),
    [(name, {}) for name in NAMES]
    + [("prectr_v2", {"consistency": "kl"}), ("prectr_v2", {"debias_negatives": "both"})],
)
def test_every_parameter_is_trained(world: World, batch: Batch, name: str, params: dict) -> None:
    """A model owns one position bias and one calibrator, and its loss reaches every trained
    parameter: no nested ranking model carries a bias table it never reads (DeepFM's first-order
    term and the two-model baseline's CTR model once did). PRECTR's stage-1 reference copy of the
    RSL module (``consistency: kl``) is frozen, so it holds no trained parameter."""
    torch.manual_seed(0)
    model = build_model(name, world.encoded.specs, world.encoded.vocab_sizes, params)
    assert [m for m in model.modules() if isinstance(m, RankingModel)] == [model]
    model.loss(batch, model(batch))["loss"].backward()
    untouched = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not untouched


@pytest.mark.parametrize("name", NAMES)
def test_empty_history_is_finite(world: World, batch: Batch, name: str) -> None:
    model = build(world, name)
    empty = without_history(batch)
    out = model(empty)
    assert torch.isfinite(out["logit"]).all()
    assert torch.isfinite(model.loss(empty, out)["loss"])


@pytest.mark.parametrize("name", NAMES)
def test_learns_in_one_epoch(world: World, name: str) -> None:
    """One epoch lifts validation AUC well above the same model untrained, and above 0.6."""
    model = build(world, name)
    model.eval()
    with torch.no_grad():
        untrained = auc(world.valid.click.numpy(), model.score(model(world.valid)).numpy())
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    if hasattr(model, "relevance_loss"):  # stage 1, as the trainer runs it
        for b in world.labelled.epoch(0):
            loss = model.relevance_loss(b)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    for b in world.train.epoch(0):
        loss = model.loss(b, model(b))["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        scores = model.score(model(world.valid)).numpy()
    value = auc(world.valid.click.numpy(), scores)
    assert value >= max(0.6, untrained + 0.05), f"{name}: AUC {value:.3f} from {untrained:.3f}"


class LogitOf(nn.Module):
    """Batch tensors -> logit, the signature a serving export traces."""

    def __init__(self, model: RankingModel, template: Batch):
        super().__init__()
        self.model, self.template = model, template
        self.names = sorted(template.sequences)

    def forward(
        self, categorical: torch.Tensor, numeric: torch.Tensor, *sequences: torch.Tensor
    ) -> torch.Tensor:
        batch = dataclasses.replace(
            self.template,
            categorical=categorical,
            numeric=numeric,
            sequences=dict(zip(self.names, sequences, strict=True)),
        )
        return self.model(batch)["logit"]


def inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    return batch.categorical, batch.numeric, *(batch.sequences[k] for k in sorted(batch.sequences))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
def test_traced_export_matches_eager(world: World, batch: Batch, name: str) -> None:
    wrapped = LogitOf(build(world, name).eval(), batch)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, inputs(batch))
        other = without_history(world.valid)  # another batch size, and empty histories
        for b in (batch, world.valid, other):
            torch.testing.assert_close(traced(*inputs(b)), wrapped(*inputs(b)), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torch_export_with_dynamic_batch(world: World, batch: Batch, name: str) -> None:
    """``torch.export``, the successor of ``jit.trace``, with the batch size left free."""
    wrapped = LogitOf(build(world, name).eval(), batch)
    rows = {0: torch.export.Dim("batch")}
    shapes = (rows, rows, tuple(rows for _ in batch.sequences))
    exported = torch.export.export(wrapped, inputs(batch), dynamic_shapes=shapes).module()
    with torch.no_grad():
        valid = inputs(world.valid)
        torch.testing.assert_close(exported(*valid), wrapped(*valid), atol=1e-5, rtol=0)


def test_two_model_fuses_click_and_relevance(world: World, batch: Batch) -> None:
    model = build(world, "two_model")
    relevance = {id(p) for p in model.relevance.parameters()}
    assert relevance.isdisjoint(id(p) for p in model.ctr.parameters())
    out = model(batch)
    assert out["grade_logits"].shape == (len(batch), 4)
    p = model.score(out)
    assert ((p > 0) & (p < 1)).all()
    assert (p <= torch.sigmoid(out["ctr_logit"]) + 1e-5).all()  # relevance only discounts
    losses = model.loss(batch, out)
    assert set(losses) == {"loss", "loss_click", "loss_relevance"}
    assert torch.allclose(losses["loss"], losses["loss_click"] + losses["loss_relevance"])
    click = F.binary_cross_entropy_with_logits(out["ctr_logit"], batch.click)
    assert torch.allclose(losses["loss_click"], click)  # the CTR model's own logit
    unlabelled = dataclasses.replace(batch, relevance=torch.full_like(batch.relevance, -1))
    assert model.loss(unlabelled, out)["loss_relevance"] == 0


def test_target_attention_masks_padding() -> None:
    torch.manual_seed(0)
    attention = TargetAttention(8)
    query, keys = torch.randn(3, 8), torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 5])
    out = attention(query, keys, mask)
    assert torch.equal(out[2], torch.zeros(8))
    out.sum().backward()
    assert torch.isfinite(keys.grad).all() and torch.equal(keys.grad[2], torch.zeros(5, 8))
    noise = torch.where(mask.unsqueeze(-1), 0.0, torch.randn(3, 5, 8))
    torch.testing.assert_close(attention(query, keys + noise, mask), out)


def test_din_attends_only_to_clicked_items(world: World, batch: Batch) -> None:
    model = build(world, "din")
    interest: list[torch.Tensor] = []
    model.interest.attention.register_forward_hook(lambda module, args, out: interest.append(out))
    model(batch)
    model(without_history(batch))
    has_history = (batch.sequences["user_clicks"] != 0).any(1)
    assert has_history.any() and (~has_history).any()
    assert (interest[0][has_history] != 0).any(1).all()
    assert not interest[0][~has_history].any() and not interest[1].any()
