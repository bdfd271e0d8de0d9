"""Post-hoc calibrators (golden cases), and the model's scores at the reference position."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prectr.models.calibration import (
    Calibrator,
    calibration_path,
    fit_calibrator,
    load_calibrator,
    pool_adjacent_violators,
    save_calibrator,
)
from prectr.models.registry import build_model
from tests.models.conftest import World


def test_pool_adjacent_violators_hand_computed():
    starts, means, weights = pool_adjacent_violators(np.array([1.0, 3, 2, 4]), np.ones(4))
    assert starts.tolist() == [0, 1, 3]
    assert means.tolist() == [1.0, 2.5, 4.0] and weights.tolist() == [1.0, 2.0, 1.0]
    # weights pull the pooled mean, and a tie pools too (block means strictly increase)
    _, means, _ = pool_adjacent_violators(np.array([2.0, 1, 1]), np.array([1.0, 3, 1]))
    assert means.tolist() == [pytest.approx((2 * 1 + 1 * 3 + 1 * 1) / 5)]


def test_isotonic_interpolates_between_knots_and_keeps_the_order_beyond():
    iso = Calibrator("isotonic", {"x": [0.0, 1.0, 2.0], "y": [0.1, 0.3, 0.7]})
    got = iso(torch.tensor([0.0, 0.5, 1.5, 2.0]))
    torch.testing.assert_close(got, torch.tensor([0.1, 0.2, 0.5, 0.7]))
    # beyond the knots: the sigmoid's shape, meeting them, towards 0 and 1, in order
    below, above = iso(torch.tensor([-3.0, -1.0])), iso(torch.tensor([3.0, 6.0]))
    sig = torch.sigmoid
    torch.testing.assert_close(below[1], 0.1 * sig(torch.tensor(-1.0)) / sig(torch.tensor(0.0)))
    torch.testing.assert_close(
        above[0], 1 - 0.3 * sig(torch.tensor(-3.0)) / sig(torch.tensor(-2.0))
    )
    assert 0 < below[0] < below[1] < 0.1 and 0.7 < above[0] < above[1] < 1


def test_isotonic_fitted_on_runs_of_equal_logits_has_distinct_knots_and_no_nan():
    """Many rows at one logit (a clamped score) whose click rate rises with their order used to
    give two knots at one logit, and NaN for every input."""
    rng = np.random.default_rng(0)
    logit = np.r_[np.full(6_000, -5.0), rng.normal(0, 1, 14_000)]
    click = np.r_[np.linspace(0, 1, 6_000) > rng.random(6_000), rng.random(14_000) < 0.3]
    iso = fit_calibrator("isotonic", logit, click.astype(float))
    assert (torch.diff(iso.x) > 0).all()
    assert torch.isfinite(iso(torch.tensor([-6.0, -5.0, 0.0, 3.0]))).all()


def test_platt_recovers_the_scaling_of_a_miscalibrated_logit():
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 2, 200_000)
    click = rng.random(logit.size) < 1 / (1 + np.exp(-(0.5 * logit - 1.0)))
    platt = fit_calibrator("platt", logit, click)
    assert platt.a.item() == pytest.approx(0.5, abs=0.02)
    assert platt.b.item() == pytest.approx(-1.0, abs=0.02)


def test_isotonic_is_monotone_and_matches_the_fitted_click_rate():
    rng = np.random.default_rng(1)
    logit = rng.normal(0, 2, 50_000)
    click = rng.random(logit.size) < 1 / (1 + np.exp(-(2.0 * logit - 2.0)))
    iso = fit_calibrator("isotonic", logit, click)
    p = iso(torch.as_tensor(np.sort(logit), dtype=torch.float32)).numpy()
    assert (np.diff(p) >= 0).all() and iso.x.numel() <= 256
    assert p.mean() == pytest.approx(click.mean(), rel=0.02)


def test_a_calibrator_round_trips_through_its_file_and_defaults_to_the_sigmoid(tmp_path):
    checkpoint = tmp_path / "best.pt"
    assert calibration_path(checkpoint) == tmp_path / "best.calibration.json"
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(load_calibrator(checkpoint)(x), torch.sigmoid(x))
    platt = Calibrator("platt", {"a": 2.0, "b": -0.5})
    save_calibrator(platt, checkpoint)
    assert json.loads(calibration_path(checkpoint).read_text()) == {
        "kind": "platt", "a": 2.0, "b": -0.5
    }  # fmt: skip
    torch.testing.assert_close(load_calibrator(checkpoint)(x), torch.sigmoid(2 * x - 0.5))
    with pytest.raises(ValueError, match="calibration 'beta'"):
        Calibrator("beta")


def test_scores_are_served_at_the_reference_position(world: World, batch):
    torch.manual_seed(0)
    model = build_model("dnn", world.encoded.specs, world.encoded.vocab_sizes,
                        reference_position=3).eval()  # fmt: skip
    with torch.no_grad():
        model.position_bias.weight.copy_(torch.linspace(1, -1, 65)[:, None])
        out = model(batch)
        bias = model.position_bias.weight[:, 0]
        torch.testing.assert_close(model.score(out), torch.sigmoid(out["logit"] + bias[3]))
        shown = model.shown_probability(out, batch.position)
        torch.testing.assert_close(shown, torch.sigmoid(out["logit"] + bias[batch.position]))
        model.calibrator = Calibrator("platt", {"a": 2.0, "b": 0.0})
        torch.testing.assert_close(model.score(out), torch.sigmoid(2 * (out["logit"] + bias[3])))
    assert not any("calibrator" in k for k in model.state_dict())  # it lives in its own file
    with pytest.raises(ValueError, match="reference position 0"):
        build_model("dnn", world.encoded.specs, world.encoded.vocab_sizes, reference_position=0)


def test_two_model_puts_its_click_model_at_the_position(world: World, batch):
    torch.manual_seed(0)
    model = build_model("two_model", world.encoded.specs, world.encoded.vocab_sizes).eval()
    with torch.no_grad():
        model.position_bias.weight.fill_(0.7)
        out = model(batch)
        p = torch.sigmoid(out["ctr_logit"] + 0.7) * out["utility"]
        torch.testing.assert_close(model.score(out), p.clamp(1e-6, 1 - 1e-6))
