"""PRECTR and PRECTR-V2: each module's contract and each switch of the model."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prectr.data.dataset import Batch
from prectr.data.features import FeatureConfig, FeatureEncoder, feature_specs
from prectr.data.groups import ITEM, MissingFeatures, find
from prectr.losses.pairwise_debias import pairwise_debias, truncation
from prectr.models.prectr import PRECTR, unexposed_partners
from prectr.models.registry import build_model
from prectr.modules.attention import TargetAttention
from prectr.modules.base_ctr import BaseCTR
from prectr.modules.embeddings import FeatureEmbedding
from prectr.modules.incentive import (
    CROWD_HISTORY,
    CROWD_TOLERANCE,
    USER_HISTORY,
    PreferenceMining,
    other_query_requests,
)
from tests.models.conftest import World


def build(world: World, name: str = "prectr_v2", **params) -> PRECTR:
    torch.manual_seed(0)
    return build_model(name, world.encoded.specs, world.encoded.vocab_sizes, params)


SPECS = feature_specs(FeatureConfig(relevance_context=True), has_query_category=True)


def names(roles) -> list[str]:
    """The names the features with ``roles`` have."""
    return [find(SPECS, role).name for role in roles]


def blank(batch, fields) -> object:
    blanked = set(names(fields))
    sequences = {k: torch.zeros_like(v) if k in blanked else v for k, v in batch.sequences.items()}
    return dataclasses.replace(batch, sequences=sequences)


def test_v2_presets_cross_user_mining_and_debias_over_v1(world: World) -> None:
    v1, v2 = build(world, "prectr_v1"), build(world, "prectr_v2")
    assert v1.preference.crowd is None and not v1.debias
    assert v2.preference.crowd is not None and v2.debias
    assert v2.preference.user.heads == 2
    assert not build(world, "prectr_v2", debias=False).debias  # the config wins over a preset


def test_the_ranking_logit_is_the_fused_click_probability_plus_the_incentive(world, batch):
    """Read as the paper writes it, in probability space: P(click) = sum_r P(click | r) P(r),
    from the base CTR's per-grade click logits and the RSL module's own grade distribution;
    the ranking logit is the logit of P(click) plus the relevance incentive."""
    model = build(world).eval()
    with torch.no_grad():
        out = model(batch)
        grade_logits = model.rsl(batch)
        per_grade = model.base_ctr.click_logits(out["context"], out["relevance"])
        p = (torch.sigmoid(per_grade.double()) * torch.softmax(grade_logits.double(), -1)).sum(1)
        incentive = model.incentive(out["tau"], torch.softmax(grade_logits, -1))
    n = len(batch)
    assert out["logit"].shape == out["incentive"].shape == (n,) and grade_logits.shape == (n, 4)
    torch.testing.assert_close(out["grade_logits"], grade_logits)
    torch.testing.assert_close(out["incentive"], incentive)
    fused = torch.log(p / (1 - p)).float()  # float32 against float64: within 1e-6
    torch.testing.assert_close(out["fused_logit"], fused, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["logit"], out["fused_logit"] + incentive)
    torch.testing.assert_close(out["click_logits"], per_grade)


def test_predictions_hold_the_per_grade_click_probabilities_the_served_score_fuses(world, batch):
    """What ``prectr evaluate`` writes as ``click_at_grade_r`` and ``grade_r``, summed over the
    grades, is the fused click probability that the served score shifts by the incentive and
    the reference position's bias (no calibration here)."""
    from prectr.train.predict import predict

    model = build(world)
    p = predict(model, [batch])
    with torch.no_grad():
        out = model(batch)
    fused = (p["click_at_grade"].astype(np.float64) * p["grades"]).sum(1)
    logit = np.log(fused / (1 - fused)) + out["incentive"].numpy() + model.bias(None).item()
    np.testing.assert_allclose(p["score"], 1 / (1 + np.exp(-logit)), rtol=1e-5, atol=1e-6)
    assert p["click_at_grade"].shape == p["grades"].shape == (len(batch), 4)


@pytest.mark.parametrize(
    "crowd",
    [{}, {"crowd_identity": False, "crowd_signal": "relative"}, {"target_attention": True}],
)
def test_histories_read_once_per_request_equal_them_read_row_by_row(
    world, monkeypatch, crowd
) -> None:
    """In training and in scoring, request-level histories are embedded, pooled and attended
    over once per request (:meth:`Batch.request_groups`); in training the click path (context,
    preference, click heads, incentive) runs on the exposed rows alone (``scored``). Every
    output and every gradient equals those of every row's histories read row by row."""
    # synthetic negatives: the click path scores the exposed rows alone
    model = build(world, "prectr_v2", debias_negatives="synthetic", **crowd)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # every history term matters
    batch = world.pool  # graded unexposed rows too, as V2's training batches hold
    scored = torch.nonzero(batch.exposed).squeeze(1)
    assert scored.numel() < len(batch)
    read = FeatureEmbedding.sequence
    per_request = []  # whether each sequence was read at the requests' first rows

    def sequence(self, batch, name, first=None):
        per_request.append(first is not None)
        return read(self, batch, name, first)

    monkeypatch.setattr(FeatureEmbedding, "sequence", sequence)

    def outputs(training: bool) -> tuple[dict, dict]:
        model.train(training)
        per_request.clear()
        out = model(batch)
        assert any(per_request) == (Batch.request_groups(batch) is not None)
        if training:
            assert torch.equal(out.pop("scored"), scored)
        else:  # every row scored: the click path's outputs at the exposed rows
            out = {k: v if k in ("grade_logits", "relevance_pre") else v[scored]
                   for k, v in out.items()}  # fmt: skip
        model.zero_grad()
        sum(v.square().sum() for k, v in out.items()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()
                     if p.grad is not None}  # fmt: skip

    grouped = [outputs(True), outputs(False)]
    monkeypatch.setattr(Batch, "request_groups", lambda self: None)
    per_row = outputs(False)
    for once in grouped:
        assert_same_step(once, per_row, **BY_REQUEST)


def test_din_reads_the_clicked_items_once_per_request_as_row_by_row(world, monkeypatch) -> None:
    """DIN attends over a request's clicked items once per request: its logits and gradients
    equal those of the history read row by row."""
    model = build(world, "din")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # the history term matters
    batch = world.pool
    assert batch.request_groups() is not None

    def step() -> tuple[dict, dict]:
        model.zero_grad()
        logit = model(batch)["logit"]
        logit.square().sum().backward()
        return {"logit": logit.detach()}, {n: p.grad.clone() for n, p in model.named_parameters()
                                           if p.grad is not None}  # fmt: skip

    once = step()
    monkeypatch.setattr(Batch, "request_groups", lambda self: None)
    assert_same_step(once, step(), **BY_REQUEST)


def training_step(model: PRECTR, batch: Batch) -> tuple[dict, dict]:
    """The training loss's parts and every parameter's gradient of one step on ``batch`` (the
    same synthetic negatives on every call)."""
    model.train().zero_grad()
    torch.manual_seed(1)
    losses = model.loss(batch, model(batch))
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def assert_same_step(
    step: tuple[dict, dict], reference: tuple[dict, dict],
    outputs: tuple[float, float] = (1e-6, 1e-6), grads: tuple[float, float] = (1e-7, 1e-6),
) -> None:  # fmt: skip
    """The outputs (a loss's parts) and every gradient within ``outputs`` and ``grads``
    (absolute, relative) of the reference's."""
    (got, got_grads), (want, want_grads) = step, reference
    assert got.keys() == want.keys() and got_grads.keys() == want_grads.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=outputs[0], rtol=outputs[1])
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=grads[0],
                                   rtol=grads[1])  # fmt: skip


#: reading a request's histories once against row by row: the order of the sums differs
BY_REQUEST = {"outputs": (1e-5, 1e-5), "grads": (1e-5, 1e-4)}


def test_a_feature_read_by_several_modules_is_embedded_once(world, monkeypatch) -> None:
    """The candidate item is a field, DIN's query and mining's target; the user's clicks a
    pooled field, DIN's history and mining's (with the trunk's target attention, the most
    readers): in a forward pass each is looked up once (:meth:`FeatureEmbedding.reads_once`).
    The loss and every gradient equal those of every module looking up its own."""
    model = build(world, "prectr_v2", target_attention=True)
    item_table = model.base_ctr.embedding.tables["item"]
    lookups = []
    item_table.register_forward_hook(lambda module, args, out: lookups.append(args[0].shape))
    once = training_step(model, world.pool)
    assert len(lookups) == 3  # the candidate, the user's clicks, the crowd's items
    lookups.clear()
    monkeypatch.setattr(
        FeatureEmbedding, "reads_once", lambda self, untrained=None: contextlib.nullcontext()
    )
    assert_same_step(once, training_step(model, world.pool))
    assert len(lookups) == 7


def test_a_sequence_read_once_per_request_is_read_at_each_first_it_is_given(world, batch) -> None:
    """Within ``reads_once`` a per-request sequence read at the batch's first rows is read once
    however often it is asked for, and one read at other rows (the other-query control's
    partners) gets those rows, not the cached ones."""
    embedding = build(world).base_ctr.embedding
    first, _ = batch.requests()
    partners = first.flip(0)
    with torch.no_grad(), embedding.reads_once():
        own = embedding.sequence(batch, "crowd_items", first)
        assert embedding.sequence(batch, "crowd_items", first)[0] is own[0]
        other = embedding.sequence(batch, "crowd_items", partners)
    with torch.no_grad():
        torch.testing.assert_close(other[0], embedding.sequence(batch, "crowd_items", partners)[0])
    assert not torch.equal(other[0], own[0])


@pytest.mark.parametrize("target_attention", [True, False])
def test_the_click_trunk_in_parts_is_the_trunk_applied_to_each_row(
    world, monkeypatch, target_attention
) -> None:
    """The trunk's first layer is applied in parts (:meth:`BaseCTR.context_layer`): the
    context's part once per click for its synthetic negatives too, and that of the context's
    request-level columns once per request. The loss and every gradient equal those of the
    trunk applied whole to each row's context and relevance, synthetic negatives included;
    with the Emb+MLP trunk too, whose context holds no candidate interest."""
    model = build(world, "prectr_v2", target_attention=target_attention)
    attends = any(isinstance(m, TargetAttention) for m in model.base_ctr.modules())
    assert attends == target_attention
    embedding = model.base_ctr.embedding
    interest = 2 * embedding.dim if target_attention else 0
    assert model.base_ctr.out_dim == embedding.flat_dim + interest
    in_parts = training_step(model, world.pool)
    assert in_parts[0]["loss_pairwise"] > 0  # the synthetic negatives are scored
    monkeypatch.setattr(BaseCTR, "context_layer", lambda self, context, requests=None: context)
    monkeypatch.setattr(BaseCTR, "layered_click_logits",
                        lambda self, context, relevance: self.heads(self.trunk(
                            torch.cat([context, relevance], 1))))  # fmt: skip
    assert_same_step(in_parts, training_step(model, world.pool))


@pytest.mark.parametrize(
    "params",
    [{}, {"consistency": "kl"}, {"debias": False}, {"debias_negatives": "synthetic"},
     {"debias_negatives": "both"}],
)  # fmt: skip
def test_the_training_loss_is_the_loss_of_every_row_scored(world, params) -> None:
    """Training scores only the rows its loss reads (with unexposed negatives, the exposed
    rows and the partners drawn); the loss and every gradient equal those of the same loss
    over scores of every row (the model as it evaluates, its partners drawn in the loss)."""
    model = build(world, "prectr_v2", **params)
    batch = world.pool
    results, outputs = [], []
    for training in (False, True):  # training last: it advances the truncation schedule
        model.train(training)
        model.zero_grad()
        torch.manual_seed(1)  # the same negatives, drawn in the same order
        outputs.append(model(batch))
        losses = model.loss(batch, outputs[-1])
        losses["loss"].backward()
        results.append((losses, {n: p.grad.clone() for n, p in model.named_parameters()
                                 if p.grad is not None}))  # fmt: skip
    assert "scored" not in outputs[0] and outputs[1]["scored"].numel() < len(batch)
    assert len(outputs[1]["logit"]) == outputs[1]["scored"].numel()
    (every, grad_every), (scored, grad_scored) = results
    assert every.keys() == scored.keys() and grad_every.keys() == grad_scored.keys()
    for name in every:
        torch.testing.assert_close(scored[name], every[name], atol=1e-6, rtol=1e-6)
    for name in grad_every:
        torch.testing.assert_close(grad_scored[name], grad_every[name], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("negatives", ["unexposed", "both"])
def test_training_with_unexposed_negatives_scores_the_drawn_partners(world, negatives) -> None:
    """With unexposed negatives, training scores the exposed rows and the partners drawn for
    the clicks, not every candidate of the pool."""
    model = build(world, "prectr_v2", debias_negatives=negatives).train()
    pool = world.pool
    read = []
    model.rsl.text.register_forward_hook(lambda module, args, output: read.append(len(output)))
    out = model(pool)
    drawn = torch.zeros_like(pool.exposed)
    drawn[out["partners"][out["partnered"]]] = True
    assert drawn.any() and not (drawn & pool.exposed).any()
    assert torch.equal(out["scored"], torch.nonzero(pool.exposed | drawn).squeeze(1))
    assert out["scored"].numel() < len(pool)
    # the RSL reads the rows a loss reads; with synthetic negatives too, every row (their
    # low-grade pool may need the RSL's own grades where no row is graded)
    if negatives == "unexposed":
        assert read == [int((pool.exposed | (pool.relevance >= 0) | drawn).sum())]
        assert read[0] < len(pool)
    else:
        assert read == [len(pool)]


def test_monotone_click_heads_never_fall_with_the_grade(world, batch) -> None:
    model = build(world, monotone=True)
    out = model(batch)
    logits = model.base_ctr.click_logits(out["context"], out["relevance"])
    assert (logits.diff(dim=1) >= 0).all()
    free = build(world, monotone=False)
    free_out = free(batch)
    assert (free.base_ctr.click_logits(free_out["context"], free_out["relevance"]).diff(dim=1)
            < 0).any()  # fmt: skip


@pytest.mark.parametrize("monotone", [False, True])
def test_offset_grade_heads_differ_by_the_same_constants_for_every_candidate(
    world, batch, monotone
) -> None:
    model = build(world, grade_heads="offset", monotone=monotone)
    with torch.no_grad():
        model.base_ctr.grade_offsets.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    out = model(batch)
    logits = model.base_ctr.click_logits(out["context"], out["relevance"])
    steps = logits - logits[:, :1]
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-6)
    expected = torch.tensor([0.0, -1.0, 0.5, 2.0])
    if monotone:
        expected = torch.cat([torch.zeros(1), F.softplus(torch.tensor([-1.0, 0.5, 2.0])).cumsum(0)])
    assert torch.allclose(steps[0], expected, atol=1e-6)
    assert logits[:, 0].std() > 0  # the shared click logit still reads the candidate
    assert torch.allclose(out["click_logits"], logits, atol=1e-5)  # what the fusion reads
    # the offsets and the shared head learn from the click loss through the fusion
    model.loss(batch, out)["loss"].backward()
    assert model.base_ctr.grade_offsets.grad.abs().sum() > 0
    assert model.base_ctr.heads[-1].weight.grad.abs().sum() > 0
    assert model.base_ctr.heads[-1].weight.shape[0] == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_offset_grade_heads_trace_for_any_batch_size(world, batch) -> None:
    """Export traces the scoring graph on one batch and serves others: the offsets must not
    fix the number of rows."""
    model = build(world, grade_heads="offset").eval().requires_grad_(False)
    with torch.no_grad():
        out = model(batch)
        inputs = (out["context_layer"], out["relevance"])
        traced = torch.jit.trace(lambda *x: model.base_ctr.layered_click_logits(*x), inputs)
        fewer = tuple(x[:7] for x in inputs)
        assert torch.allclose(traced(*fewer), model.base_ctr.layered_click_logits(*fewer))


def test_incentive_experts_have_their_signs(world, batch) -> None:
    model = build(world)
    out = model(batch)
    incentive, x = model.incentive, (out["tau"], torch.softmax(out["grade_logits"], -1))
    with torch.no_grad():
        gate = incentive.gate[-1]
        gate.weight.zero_()
        gate.bias.copy_(torch.tensor([50.0, -50.0]))
        assert (incentive(*x) >= 0).all()  # all weight on the positive expert
        gate.bias.copy_(torch.tensor([-50.0, 50.0]))
        assert (incentive(*x) <= 0).all()


def test_empty_histories_give_finite_scores_and_the_crowd_still_speaks(world, batch) -> None:
    model = build(world)
    model.eval()
    no_user = blank(batch, USER_HISTORY)
    nothing = blank(no_user, CROWD_HISTORY)
    for b in (no_user, nothing):
        out = model(b)
        assert torch.isfinite(out["logit"]).all() and torch.isfinite(out["tau"]).all()
    has_crowd = (no_user.sequences["crowd_clicks"] != 0).any(1)
    assert has_crowd.any()
    # a user with no history: V2's preference comes from the crowd, V1 has none
    assert (model(no_user)["tau"][has_crowd] != 0).any(1).all()
    assert not model(nothing)["tau"].any()
    assert not build(world, "prectr_v1")(no_user)["tau"].any()


@pytest.mark.parametrize("negatives", ["unexposed", "synthetic"])
def test_every_loss_part_is_logged_and_finite(world, batch, negatives) -> None:
    model = build(world, debias_negatives=negatives)
    model.train()
    losses = model.loss(batch, model(batch))
    assert set(losses) == {"loss", "loss_click", "loss_consistency", "loss_pairwise",
                           "loss_reconstruct"}  # fmt: skip
    assert all(torch.isfinite(v) for v in losses.values())
    debias = losses["loss_pairwise"] + losses["loss_reconstruct"]
    expected = (
        losses["loss_click"] + 0.5 * losses["loss_consistency"] + model.debias_weight * debias
    )
    torch.testing.assert_close(losses["loss"], expected)
    assert int(model.step) == 1  # the truncation schedule advanced
    plain = build(world, incentive=False, cross_user=False, debias=False, consistency="none")
    assert set(plain.loss(batch, plain(batch))) == {"loss", "loss_click"}


def test_training_rows_follow_the_switches(world) -> None:
    assert build(world).training_rows == "all"  # V2's unexposed negatives
    assert build(world, debias_negatives="synthetic").training_rows == "exposed_or_labelled"
    assert build(world, debias_negatives="synthetic", consistency="none").training_rows == (
        "exposed"
    )
    assert build(world, debias_negatives="both").training_rows == "all"
    assert build(world, debias=False).training_rows == "exposed_or_labelled"


def test_unexposed_partners_come_from_the_same_request_and_are_unexposed(world) -> None:
    pool = world.pool
    clicked = torch.nonzero(pool.exposed & (pool.click > 0)).squeeze(1)
    torch.manual_seed(0)
    partners, valid = unexposed_partners(pool, clicked, 5)
    assert partners.shape == valid.shape == (clicked.numel(), 5) and valid.all()
    assert (pool.request[partners] == pool.request[clicked, None]).all()
    assert not pool.exposed[partners].any()
    shown_only = dataclasses.replace(pool, exposed=torch.ones_like(pool.exposed))
    assert not unexposed_partners(shown_only, clicked, 2)[1].any()


@pytest.mark.parametrize("negatives", ["synthetic", "unexposed", "both"])
def test_debias_with_each_kind_of_negative_trains(world, negatives: str) -> None:
    """Each click is paired with ``hard_negatives`` negatives of each kind asked for (synthetic
    first, then unexposed candidates of its request, drawn in the forward pass), weighted by
    its P(grade >= 2), the loss divided by the pairs made; every parameter it reaches gets a
    finite gradient."""
    pool = world.pool
    model = build(world, debias_negatives=negatives)
    model.train()
    out = model(pool)
    torch.manual_seed(1)
    losses = model.debias_loss(pool, out)
    torch.manual_seed(1)  # the same draws, in the same order
    clicked = torch.nonzero(pool.exposed & (pool.click > 0)).squeeze(1)
    k = model.hard_negatives
    scores, valid = [], []
    if negatives != "synthetic":  # drawn first
        partners, has_partner = out["partners"], out["partnered"]
    if negatives != "unexposed":
        scores.append(model._synthetic_negatives(pool, out, clicked)["logit"].view(-1, k))
        valid.append(torch.ones_like(scores[-1], dtype=torch.bool))
    if negatives != "synthetic":
        at = model.at_scored(out, partners)
        assert torch.equal(out["scored"][at[has_partner]], partners[has_partner])
        scores.append(out["logit"][at])
        valid.append(has_partner)
    valid = torch.cat(valid, 1)
    weight = torch.softmax(out["grade_logits"][clicked], -1)[:, 2:].sum(1)
    positives = out["logit"][model.at_scored(out, clicked)]  # the scored rows alone
    expected = pairwise_debias(positives, torch.cat(scores, 1), weight, model.margin, model.clip,
                               truncation(0, *model.schedule), valid,
                               float(valid.sum()))  # fmt: skip
    torch.testing.assert_close(losses["loss_pairwise"], expected)
    losses = model.loss(pool, out)
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert (losses["loss_reconstruct"] > 0) == (negatives != "unexposed")


@pytest.mark.parametrize("push", ["both", "negatives"])
def test_debias_push_moves_the_negatives_and_the_clicks_only_when_asked(world, push) -> None:
    """``debias_push: negatives`` costs what ``both`` costs, but its gradient reaches the
    clicks' scores not at all, the partners' as before."""
    pool = world.pool
    model = build(world, debias_negatives="unexposed", debias_push=push)
    model.train()
    torch.manual_seed(1)
    out = model(pool)
    out["logit"].retain_grad()
    pairwise = model.debias_loss(pool, out)["loss_pairwise"]
    pairwise.backward()
    clicked = torch.nonzero(pool.exposed & (pool.click > 0)).squeeze(1)
    on_clicks = out["logit"].grad[model.at_scored(out, clicked)]
    partners = out["partners"][out["partnered"]]
    on_partners = out["logit"].grad[model.at_scored(out, partners)]
    assert pairwise > 0 and (on_partners > 0).any()  # a partner is pushed down
    assert (on_clicks == 0).all() == (push == "negatives")
    both = build(world, debias_negatives="unexposed")
    both.load_state_dict(model.state_dict())
    both.train()
    torch.manual_seed(1)
    again = both(pool)
    torch.testing.assert_close(both.debias_loss(pool, again)["loss_pairwise"], pairwise)


def _item_table_grads(world, negatives: str, trains: bool, loss: str) -> dict:
    """One training forward pass on the pool and the backward of one loss part: the item
    table's gradient, the gradient on the click path's scores, the forward outputs."""
    model = build(world, debias_negatives=negatives, debias_trains_item_ids=trains)
    model.train()
    torch.manual_seed(1)
    out = model(world.pool)
    out["logit"].retain_grad()
    model.loss(world.pool, out)[loss].backward()
    embedding = model.base_ctr.embedding
    column = [s.role for s in embedding.categorical].index(ITEM)
    table = embedding.tables[embedding.categorical[column].vocab]
    return {"table": table.weight.grad, "logit": out["logit"].grad, "out": out,
            "column": column, "model": model}  # fmt: skip


@pytest.mark.parametrize("negatives", ["unexposed", "both"])
@pytest.mark.parametrize("trains", [True, False])
def test_debias_trains_item_ids_or_leaves_the_unexposed_ids_to_their_exposures(
    world, negatives, trains
) -> None:
    """With ``debias_trains_item_ids: false`` the pairwise loss reaches no item-ID embedding
    that only unexposed partners hold (their own ID read: the candidate field, DIN's query,
    mining's target), but still reaches the partners' scores; with true (the default) it
    trains every one of them. The click loss's gradient is the same either way."""
    pool = world.pool
    got = _item_table_grads(world, negatives, trains, "loss_pairwise")
    out, model = got["out"], got["model"]
    items = pool.categorical[:, got["column"]]
    partners = out["partners"][out["partnered"]]
    # ids a partner holds and no other row: not an exposed candidate, in no history
    elsewhere = torch.cat([items[pool.exposed], *(v.flatten() for v in pool.sequences.values())])
    only = partners.new_tensor(sorted(set(items[partners].tolist()) - set(elsewhere.tolist())))
    assert only.numel() > 0
    assert ((got["table"][only].abs().sum(1) > 0) == trains).all()
    assert (got["logit"][model.at_scored(out, partners)] > 0).any()  # still pushed down
    click = _item_table_grads(world, negatives, trains, "loss_click")
    default = _item_table_grads(world, negatives, True, "loss_click")
    assert torch.equal(click["table"], default["table"])
    assert torch.equal(click["logit"], default["logit"])


def test_debias_trains_item_ids_false_needs_unexposed_negatives(world) -> None:
    with pytest.raises(ValueError, match="debias_trains_item_ids"):
        build(world, debias_negatives="synthetic", debias_trains_item_ids=False)


def _partner_draw_past_the_scored_rows(pool: Batch) -> Batch:
    """Two requests: the first clicked with every candidate exposed, so its clicks have no
    partner; the second nobody clicked, its unexposed candidates last. A partnerless click's
    draw then names the second request's first unexposed row, past every scored row."""
    first = pool.request[pool.exposed & (pool.click > 0)][0]
    others = pool.request[(pool.request != first) & ~pool.exposed]
    second = pool.request == others[0]
    rows = torch.cat([torch.nonzero(pool.request == first).squeeze(1),
                      torch.nonzero(second & pool.exposed).squeeze(1),
                      torch.nonzero(second & ~pool.exposed).squeeze(1)])  # fmt: skip
    batch = pool.take(rows)
    in_first = batch.request == first
    return dataclasses.replace(batch, exposed=batch.exposed | in_first,
                               click=torch.where(in_first, batch.click, 0.0))  # fmt: skip


@pytest.mark.parametrize("negatives", ["unexposed", "both"])
def test_a_partnerless_click_whose_draw_lies_past_the_scored_rows(world, negatives) -> None:
    """The invalid partner of a click without one is not scored; where its draw lies past
    every scored row, its position among them is out of range. It makes no pair: the loss and
    every gradient equal those of the model scoring every row."""
    batch = _partner_draw_past_the_scored_rows(world.pool)
    model = build(world, debias_negatives=negatives)
    results = []
    for training in (False, True):
        model.train(training)
        model.zero_grad()
        torch.manual_seed(1)
        out = model(batch)
        losses = model.loss(batch, out)
        losses["loss"].backward()
        results.append((losses, {n: p.grad.clone() for n, p in model.named_parameters()
                                 if p.grad is not None}))  # fmt: skip
    assert not out["partnered"].any()
    assert (model.at_scored(out, out["partners"]) == out["scored"].numel()).any()
    (every, grad_every), (scored, grad_scored) = results
    for name in every:
        torch.testing.assert_close(scored[name], every[name], atol=1e-6, rtol=1e-6)
    for name in grad_every:
        torch.testing.assert_close(grad_scored[name], grad_every[name], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("negatives", ["synthetic", "unexposed", "both"])
def test_a_batch_without_clicks_has_a_finite_loss(world, negatives: str) -> None:
    """A shard's last batch can be one request nobody clicked."""
    pool = world.pool
    rows = torch.nonzero(pool.request == pool.request[0]).squeeze(1)
    quiet = Batch(**{f.name: _rows(getattr(pool, f.name), rows) for f in dataclasses.fields(pool)})
    quiet = dataclasses.replace(quiet, click=torch.zeros_like(quiet.click))
    model = build(world, debias_negatives=negatives)
    model.train()
    losses = model.loss(quiet, model(quiet))
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_pairwise"] == 0
    losses["loss"].backward()


def _rows(value, rows: torch.Tensor):
    if isinstance(value, dict):
        return {k: v[rows] for k, v in value.items()}
    return value if value is None else value[rows]


def test_synthetic_negatives_flow_through_the_whole_scoring_path(world, batch) -> None:
    model = build(world, incentive=True)
    out = model(batch)
    clicked = torch.nonzero(batch.exposed & (batch.click > 0)).squeeze(1)
    negatives = model._synthetic_negatives(batch, out, clicked)
    assert negatives["logit"].shape == (2 * clicked.numel(),)
    assert "incentive" in negatives
    model.mix_max = 0.0  # no share of the positive: each negative is a real low-grade row
    low = out["relevance"][(batch.relevance >= 0) & (batch.relevance <= 1)]
    synthetic = model.synthetic_relevance(batch, out, clicked)
    assert (
        torch.cdist(synthetic, low, compute_mode="donot_use_mm_for_euclid_dist").min(1).values == 0
    ).all()  # (the scale is 1e-4)


def test_synthetic_negatives_lie_on_the_relevance_manifold(world, batch) -> None:
    """Mixed before the ReLU: non-negative, and as sparse as real relevance embeddings."""
    model = build(world)
    out = model(batch)
    clicked = torch.nonzero(batch.exposed & (batch.click > 0)).squeeze(1)
    synthetic = model.synthetic_relevance(batch, out, clicked)
    assert (synthetic >= 0).all()
    real_zeros, synthetic_zeros = (
        (out["relevance"] == 0).float().mean(),
        (synthetic == 0).float().mean(),
    )
    assert abs(float(real_zeros - synthetic_zeros)) < 0.15


def test_reconstructed_label_is_the_likelier_low_grade(world, batch) -> None:
    model = build(world)
    out = model(batch)
    clicked = torch.nonzero(batch.exposed & (batch.click > 0)).squeeze(1)
    synthetic = model._synthetic_negatives(batch, out, clicked)
    logits = synthetic["grade_logits"]
    label = logits[:, :2].argmax(1)
    expected = F.cross_entropy(logits, label, reduction="sum") / (2 * clicked.numel())
    torch.testing.assert_close(model._reconstruction(synthetic, 2 * clicked.numel()), expected)


@pytest.mark.parametrize("into_embedding", [False, True])
def test_reconstruction_reaches_the_embedding_only_when_asked(world, batch, into_embedding) -> None:
    model = build(world, reconstruct_embedding=into_embedding)
    out = model(batch)
    clicked = torch.nonzero(batch.exposed & (batch.click > 0)).squeeze(1)
    synthetic = model._synthetic_negatives(batch, out, clicked)
    model._reconstruction(synthetic, 1.0).backward()
    embedding = model.rsl.embedding[0][0].weight.grad
    assert model.rsl.head[0].weight.grad.abs().sum() > 0  # the head always learns
    assert (embedding is not None and embedding.abs().sum() > 0) == into_embedding


def test_clicks_without_an_unexposed_partner_make_no_pair(world) -> None:
    pool = world.pool
    model = build(world, debias_negatives="unexposed")
    model.train()
    # expose every candidate of the first request: its clicks lose their partners
    first = pool.request == pool.request[0]
    clicked = pool.exposed & (pool.click > 0)
    assert (first & clicked).any() and (~first & clicked).any()
    partial = dataclasses.replace(pool, exposed=pool.exposed | first)
    assert partial.rows_of("paired") == float((clicked & ~first).sum())
    torch.manual_seed(1)
    out = model(partial)
    loss = model.debias_loss(partial, out)["loss_pairwise"]
    # the same pairs, over the clicks that have a partner alone
    torch.manual_seed(1)
    partners, valid = unexposed_partners(partial, torch.nonzero(clicked).squeeze(1), 2)
    keep = valid.all(1)
    rows = torch.nonzero(clicked).squeeze(1)[keep]
    weight = torch.softmax(out["grade_logits"][rows], -1)[:, 2:].sum(1)
    truncate = truncation(0, *model.schedule)
    logit = out["logit"]
    expected = pairwise_debias(logit[model.at_scored(out, rows)],
                               logit[model.at_scored(out, partners[keep])], weight, model.margin,
                               model.clip, truncate)  # fmt: skip
    torch.testing.assert_close(loss, expected)


def test_bad_switches_are_refused_by_name(world) -> None:
    for switch, value in [("consistency", "mse"), ("debias_negatives", "random"),
                          ("mix_max", 1.5), ("crowd_signal", "mean")]:  # fmt: skip
        with pytest.raises(ValueError, match=rf"{switch}\n.*\[type=.*input_value={value!r}"):
            build(world, **{switch: value})
    with pytest.raises(ValueError, match="needs incentive"):
        build(world, incentive=False, cross_user=True)
    with pytest.raises(ValueError, match="needs crowd_identity: false"):
        build(world, crowd_signal="relative")


def test_the_incentive_names_the_features_it_lacks(world) -> None:
    plain = FeatureEncoder().specs  # no relevance context
    specs = [s for s in world.encoded.specs if s.name in {p.name for p in plain}]
    with pytest.raises(MissingFeatures, match=r"PreferenceMining reads .*crowd_history\.click"):
        build_model("prectr_v2", specs, world.encoded.vocab_sizes)
    assert build_model("prectr_v2", specs, world.encoded.vocab_sizes,
                       {"incentive": False, "cross_user": False})  # fmt: skip


def test_preference_sums_user_and_crowd_unless_gated_by_activity(world, batch) -> None:
    mining = build(world).preference
    assert isinstance(mining, PreferenceMining) and mining.gate is None  # tau = r_user + r_cate
    with torch.no_grad():  # ungated, both the user's and the crowd's history reach tau
        tau = build(world).eval()(batch)["tau"]
        for moved in (blank(batch, USER_HISTORY), scrambled_crowd(batch)):
            assert not torch.allclose(tau, build(world).eval()(moved)["tau"], atol=1e-6)


@pytest.mark.parametrize("towards_user", [True, False])
def test_the_activity_gate_chooses_between_the_user_and_the_crowd(world, batch, towards_user):
    """A gate shut on one side leaves tau blind to that side's history: open towards the user
    (g = 1), scrambling the crowd changes nothing and blanking the user's history does; shut
    (g = 0), the other way round."""
    model = build(world, activity_gate=True).eval()
    with torch.no_grad():
        model.preference.gate.weight.zero_()
        model.preference.gate.bias.fill_(50.0 if towards_user else -50.0)
        tau = model(batch)["tau"]
        user_blanked = model(blank(batch, USER_HISTORY))["tau"]
        crowd_scrambled = model(scrambled_crowd(batch))["tau"]
    assert torch.allclose(tau, crowd_scrambled, atol=1e-6) == towards_user
    assert torch.allclose(tau, user_blanked, atol=1e-6) == (not towards_user)


def scrambled_crowd(batch, fields: tuple = CROWD_HISTORY) -> object:
    """Every crowd input of ``fields`` replaced by other valid ids (and padding where there was
    none)."""
    generator = torch.Generator().manual_seed(1)
    sequences = dict(batch.sequences)
    for name in names(fields):
        ids = sequences[name]
        top = max(int(ids.max()), 3)
        sequences[name] = torch.randint(2, top + 1, ids.shape, generator=generator,
                                        dtype=ids.dtype)  # fmt: skip
    return dataclasses.replace(batch, sequences=sequences)


@pytest.mark.parametrize(("name", "params"), [("prectr_v1", {}),
                                              ("prectr_v2", {"cross_user": False})])  # fmt: skip
def test_without_mining_no_crowd_input_reaches_the_score(world, batch, name, params) -> None:
    """PRECTR and the no-mining ablation see no crowd at all: scrambling it changes nothing."""
    model = build(world, name, **params).eval()
    scrambled = scrambled_crowd(batch)
    with torch.no_grad():
        assert torch.equal(model(batch)["logit"], model(scrambled)["logit"])
        v2 = build(world, "prectr_v2").eval()  # the same scramble does move V2
        assert not torch.equal(v2(batch)["logit"], v2(scrambled)["logit"])
    assert not any(s.name.startswith("crowd") for s in model.base_ctr.embedding.pooled_specs)


def test_crowd_entries_without_identity_hide_the_shown_item_and_its_category(world, batch) -> None:
    """With ``crowd_identity: false`` V2 reads only what the crowd tolerated (match level and
    click): scrambling the crowd's items and categories changes nothing, its clicks do."""
    model = build(world, "prectr_v2", crowd_identity=False).eval()
    identity = tuple(f for f in CROWD_HISTORY if f not in CROWD_TOLERANCE)
    assert names(identity) == ["crowd_items", "crowd_categories"]
    with torch.no_grad():
        logit = model(batch)["logit"]
        assert torch.equal(logit, model(scrambled_crowd(batch, identity))["logit"])
        assert not torch.equal(logit, model(scrambled_crowd(batch, CROWD_TOLERANCE))["logit"])
        full = build(world, "prectr_v2").eval()  # with identity, the items do reach the score
        scrambled = full(scrambled_crowd(batch, identity))["logit"]
        assert not torch.equal(full(batch)["logit"], scrambled)


def partners_crowd(batch, query_column: int):
    """``batch`` with each request's crowd replaced by that of its :func:`other_query_requests`
    partner, or blanked where the partner asks the same query: the control, built by hand."""
    first, owner = batch.requests()
    query = batch.categorical[first, query_column]
    partner = other_query_requests(query)
    source = first[partner][owner]  # each row's partner request's first row
    keep = (query[partner] != query)[owner].unsqueeze(1)
    crowd = set(names(CROWD_HISTORY))
    sequences = {k: v[source] * keep if k in crowd else v for k, v in batch.sequences.items()}
    return dataclasses.replace(batch, sequences=sequences)


@pytest.mark.parametrize("signal", ["entries", "relative"])
@pytest.mark.parametrize("training", [False, True])
def test_the_other_query_control_reads_the_partners_crowd_with_the_same_module(
    world, batch, signal: str, training: bool
) -> None:
    """``crowd_from: other`` holds the same parameters as V2 and scores a batch as V2 scores it
    with every request's crowd swapped for its partner's (another query's) by hand, in the
    per-request training path and the per-row scoring path alike; the swap moves the score."""
    params = {"crowd_identity": False, "crowd_signal": signal} if signal == "relative" else {}
    control = build(world, crowd_from="other", **params).train(training)
    own = build(world, **params).train(training)
    own.load_state_dict(control.state_dict())
    query_column = control.preference.target_columns[0]
    first, _ = batch.requests()
    assert len(torch.unique(batch.categorical[first, query_column])) > 1
    with torch.no_grad():
        for parameter in control.parameters():  # the levels' embeddings apart, as training
            parameter.add_(0.05 * torch.randn_like(parameter))  # moves them
        own.load_state_dict(control.state_dict())
        tau = control(batch)["tau"]
        torch.testing.assert_close(tau, own(partners_crowd(batch, query_column))["tau"])
        assert not torch.allclose(tau, own(batch)["tau"], atol=1e-6)
        # one query for every request: no partner asks another, so no request has a crowd
        categorical = batch.categorical.clone()
        categorical[:, query_column] = categorical[0, query_column]
        one_query = dataclasses.replace(batch, categorical=categorical)
        expected = own(blank(one_query, CROWD_HISTORY))["tau"]
        torch.testing.assert_close(control(one_query)["tau"], expected)


def test_the_other_query_control_needs_mining(world) -> None:
    with pytest.raises(ValueError, match=r"crowd_from 'other'.*cross_user"):
        build(world, "prectr_v1", crowd_from="other")
    with pytest.raises(ValueError, match=r"crowd_from\n.*'own' or 'other'"):
        build(world, crowd_from="nobody")


def with_crowd(batch, levels: list[int], clicks: list[int]) -> object:
    """``batch`` with every row's crowd the entries of match levels ``levels`` (0..9) and clicks
    ``clicks`` (0/1), oldest first, padded on the left."""
    sequences = dict(batch.sequences)
    for name, values in zip(names(CROWD_TOLERANCE), (levels, clicks), strict=True):
        ids = torch.zeros_like(sequences[name][0])
        ids[len(ids) - len(values) :] = torch.tensor(values) + 2  # a vocabulary's first id
        sequences[name] = ids.expand_as(sequences[name]).clone()
    return dataclasses.replace(batch, sequences=sequences)


def test_the_relative_crowd_reads_neither_the_base_rate_nor_how_much_crowd_there_is(
    world, batch
) -> None:
    """With ``crowd_signal: relative`` mining reads each match level's click rate against the
    window's: two crowds whose levels' click rates differ only by the query's base rate (0.5
    and 0 against 0.75 and 0.25) give the same preference, and so do a window and the same
    window twice, and no crowd and one that clicks every level alike. Which level is clicked
    more does move it. The second design (entries without identity) reads the base rate."""
    exact, unmatched = [9] * 4, [0] * 4
    crowd = {
        "base": ([1, 1, 0, 0], [0, 0, 0, 0]),
        "base + 0.25": ([1, 1, 1, 0], [1, 0, 0, 0]),
        "flat": ([1, 0, 1, 0], [0, 1, 0, 1]),
        "reversed": ([0, 0, 0, 0], [1, 1, 0, 0]),
    }
    batches = {k: with_crowd(batch, exact + unmatched, e + u) for k, (e, u) in crowd.items()}
    exact_clicks, unmatched_clicks = crowd["base"]
    twice = (exact_clicks + unmatched_clicks) * 2
    batches["base twice"] = with_crowd(batch, (exact + unmatched) * 2, twice)
    batches["none"] = blank(batch, CROWD_HISTORY)
    relative = build(world, crowd_identity=False, crowd_signal="relative").eval()
    entries = build(world, crowd_identity=False).eval()
    with torch.no_grad():
        for parameter in relative.parameters():  # levels' embeddings apart, as training moves
            parameter.add_(0.05 * torch.randn_like(parameter))  # them (they start at 1e-4)
        tau = {k: relative(b)["tau"] for k, b in batches.items()}
        tau_entries = {k: entries(b)["tau"] for k, b in batches.items()}
    assert torch.equal(tau["base"], tau["base + 0.25"])
    assert torch.equal(tau["base"], tau["base twice"])
    assert torch.equal(tau["none"], tau["flat"])
    assert not torch.allclose(tau["base"], tau["reversed"], atol=1e-6)
    assert not torch.allclose(tau["base"], tau["flat"], atol=1e-6)
    assert not torch.allclose(tau_entries["base"], tau_entries["base + 0.25"], atol=1e-6)
    assert not torch.allclose(tau_entries["none"], tau_entries["flat"], atol=1e-6)


@pytest.mark.parametrize(("name", "consistency"), [("prectr_v1", "ce"), ("prectr_v1", "kl"),
                                                   ("two_model", "ce")])  # fmt: skip
def test_processes_splitting_a_step_unevenly_get_the_one_process_gradient(
    world, batch, name: str, consistency: str
) -> None:
    """DDP averages the processes' gradients: with the step's rows per process
    (``Batch.step_rows``) each process's loss terms divide by, the average is the gradient of
    the mean over every row of the step, however unevenly the rows fall between processes."""
    params = {"consistency": consistency} if name != "two_model" else {}
    model = build(world, name, **params)
    cut = int(torch.nonzero(batch.request != batch.request[0])[0])  # one request, the rest
    parts = [
        Batch(**{f.name: _rows(getattr(batch, f.name), rows) for f in dataclasses.fields(batch)})
        for rows in (torch.arange(cut), torch.arange(cut, len(batch)))
    ]
    assert parts[0].local_rows()["labelled"] != parts[1].local_rows()["labelled"]

    def gradient(batches: list[Batch]) -> torch.Tensor:
        model.zero_grad()
        for b in batches:
            (model.loss(b, model(b))["loss"] / len(batches)).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    one_process = gradient([batch])
    uneven = gradient(parts)
    step = {k: sum(p.local_rows()[k] for p in parts) / 2 for k in parts[0].local_rows()}
    for p in parts:
        p.step_rows = step
    torch.testing.assert_close(gradient(parts), one_process, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(uneven, one_process, rtol=1e-3, atol=1e-5)
