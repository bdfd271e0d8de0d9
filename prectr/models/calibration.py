"""Post-hoc calibration: a monotone map from a model's click logit to a click probability.

Fitted after training on the validation day(s) (the exposed impressions, each at its logged
position), saved beside its checkpoint (``checkpoints/<name>.calibration.json``, written
atomically), and applied inside :meth:`RankingModel.score`, so evaluation, the ranker and the
exported graph (which traces ``score``) all compute the same calibrated score.

* ``none``: the sigmoid (the model's own probability).
* ``platt``: ``sigmoid(a * logit + b)``, two parameters fitted by L-BFGS on the log loss.
* ``isotonic``: pool-adjacent-violators on the logits, pre-aggregated into at most
  :data:`ISOTONIC_BINS` equal-mass bins (bins that share a logit merged, so the knots are
  distinct); between the blocks' mean logits the map interpolates linearly, so it is strictly
  increasing there, and beyond the outermost blocks it follows the sigmoid's shape scaled to
  meet them (towards 0 below, towards 1 above), so the most and least likely candidates keep
  their order too (where the lowest block's click rate is 0 the map is 0 below it). The map is
  elementwise (clamped ramps and a ``where``), which TorchScript and ONNX export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prectr.io import atomic_file
from prectr.models.calibration_kinds import KINDS

ISOTONIC_BINS = 256


class Calibrator(nn.Module):
    """A click logit to a probability; its parameters stay out of the model's state dict
    (they belong to the calibration file, not the checkpoint)."""

    def __init__(self, kind: str = "none", params: dict[str, list[float]] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"calibration {kind!r}: expected one of {', '.join(KINDS)}")
        self.kind, params = kind, params or {}
        for name, values in params.items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        if self.kind == "platt":
            return torch.sigmoid(self.a * logit + self.b)
        if self.kind == "isotonic":
            x, y = self.x, self.y
            ramps = (logit[..., None].clamp(x[:-1], x[1:]) - x[:-1]) / (x[1:] - x[:-1])
            inside = y[0] + (ramps * (y[1:] - y[:-1])).sum(-1)
            below = y[0] * torch.sigmoid(logit) / torch.sigmoid(x[0])
            above = 1 - (1 - y[-1]) * torch.sigmoid(-logit) / torch.sigmoid(-x[-1])
            return torch.where(logit < x[0], below, torch.where(logit > x[-1], above, inside))
        return torch.sigmoid(logit)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: v.tolist() for k, v in self.named_buffers()}}

    @classmethod
    def from_dict(cls, values: dict) -> Calibrator:
        values = dict(values)
        return cls(values.pop("kind"), values)


def fit_platt(logit: np.ndarray, click: np.ndarray) -> Calibrator:
    """Platt scaling: ``a``, ``b`` minimising the log loss of ``sigmoid(a * logit + b)``."""
    x = torch.as_tensor(logit, dtype=torch.float64)
    y = torch.as_tensor(click, dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = ab.detach().tolist()
    return Calibrator("platt", {"a": a, "b": b})


def pool_adjacent_violators(
    y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted least-squares non-decreasing fit of ``y`` (in order) as blocks: each
    block's first index, mean and weight. Adjacent blocks have strictly increasing means."""
    starts: list[int] = []
    means: list[float] = []
    weights: list[float] = []
    for i, (value, weight) in enumerate(zip(y.tolist(), w.tolist(), strict=True)):
        starts.append(i)
        means.append(value)
        weights.append(weight)
        while len(means) > 1 and means[-2] >= means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2] = total
            del starts[-1], means[-1], weights[-1]
    return np.array(starts), np.array(means), np.array(weights)


def fit_isotonic(logit: np.ndarray, click: np.ndarray, bins: int = ISOTONIC_BINS) -> Calibrator:
    """Isotonic regression of clicks on logits (see the module note)."""
    order = np.argsort(logit, kind="stable")
    parts = [p for p in np.array_split(order, min(bins, order.size)) if p.size]
    x = np.array([logit[p].mean() for p in parts])
    y = np.array([click[p].mean() for p in parts])
    w = np.array([p.size for p in parts], dtype=np.float64)
    # bins cut through a run of equal logits share their mean logit: merge them (sorted, so
    # they are adjacent), else the map would have two knots at one logit and divide by zero
    x, first = np.unique(x, return_index=True)
    y, w = np.add.reduceat(y * w, first) / np.add.reduceat(w, first), np.add.reduceat(w, first)
    starts, means, weights = pool_adjacent_violators(y, w)
    block_x = np.add.reduceat(x * w, starts) / weights
    if block_x.size == 1:  # one block: a constant, written as a flat two-knot map
        block_x, means = np.r_[block_x - 1.0, block_x + 1.0], np.r_[means, means]
    return Calibrator("isotonic", {"x": block_x.tolist(), "y": means.tolist()})


def fit_calibrator(kind: str, logit: np.ndarray, click: np.ndarray) -> Calibrator:
    """A calibrator of ``kind`` fitted on click logits and clicks (0/1)."""
    logit, click = np.asarray(logit, np.float64), np.asarray(click, np.float64)
    if kind == "none":
        return Calibrator()
    if logit.size == 0:
        raise ValueError("calibration needs exposed impressions on the validation days")
    return fit_platt(logit, click) if kind == "platt" else fit_isotonic(logit, click)


def calibration_path(checkpoint: Path) -> Path:
    """Where the calibrator of a checkpoint (``…/best.pt``) lives."""
    return checkpoint.with_name(f"{checkpoint.stem}.calibration.json")


def save_calibrator(calibrator: Calibrator, checkpoint: Path) -> None:
    with atomic_file(calibration_path(checkpoint)) as tmp:
        tmp.write_text(json.dumps(calibrator.to_dict(), indent=2) + "\n")


def load_calibrator(checkpoint: Path) -> Calibrator:
    """The checkpoint's calibrator; the plain sigmoid when it has none."""
    path = calibration_path(checkpoint)
    return Calibrator.from_dict(json.loads(path.read_text())) if path.is_file() else Calibrator()
