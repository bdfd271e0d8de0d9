"""A model's predictions for every row of a stream of batches: what validation, calibration,
evaluation and the benchmarks read of a trained model."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from prectr.data.dataset import Batch
from prectr.models import RankingModel


@torch.no_grad()
def predict(
    model: RankingModel, batches: Iterable[Batch], device: torch.device | None = None
) -> dict[str, np.ndarray]:
    """For every row of ``batches``: ``score`` (served, at the reference position), ``shown``
    (the calibrated click probability at the row's logged position) and ``shown_logit`` (its
    logit before calibration), and grade distributions (``grades``) and per-grade click
    probabilities (``click_at_grade``: P(click | rsl = r, x) as the fusion reads them, before
    the incentive, the position bias and calibration) where the model has them."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        out = model(batch)
        values = {
            "score": model.score(out),
            "shown": model.shown_probability(out, batch.position),
            "shown_logit": model.click_logit(out, batch.position),
            "click": batch.click,
            "exposed": batch.exposed,
            "request": batch.request,
            "item": batch.item,
        }
        if "grade_logits" in out:
            values["grades"] = torch.softmax(out["grade_logits"], -1)
        if "click_logits" in out:
            values["click_at_grade"] = torch.sigmoid(out["click_logits"])
        for k, v in values.items():
            parts.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
