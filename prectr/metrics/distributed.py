"""Click and ranking metrics over data sharded across ``torch.distributed`` processes.

Each rank holds some rows; the results equal the single-process metrics on all rows.
AUC and ECE need every score, so their inputs are gathered (an evaluation set fits in
memory; training data never goes through here). GAUC is per group: each row is
routed to the rank that owns its group (integer key modulo the world size), every rank computes
its groups, and the weighted sums are all-reduced. Works with any backend (gloo on CPU), and
in a process that joined no group (then it is the single-process computation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from prectr.metrics.click import auc, expected_calibration_error, group_auc


def _grouped() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _gather(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not _grouped():
        return arrays
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in arrays}


def _route(arrays: dict[str, np.ndarray], keys: np.ndarray) -> dict[str, np.ndarray]:
    """The rows (of every rank) whose integer key falls to this rank."""
    if not _grouped():
        return arrays
    world, rank = dist.get_world_size(), dist.get_rank()
    owner = np.asarray(keys, dtype=np.int64) % world
    outgoing = [{k: v[owner == r] for k, v in arrays.items()} for r in range(world)]
    parts: list = [None] * world
    dist.all_gather_object(parts, outgoing)
    return {k: np.concatenate([p[rank][k] for p in parts]) for k in arrays}


def all_sum(*values: float) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (the values themselves without a group)."""
    t = torch.tensor(values, dtype=torch.float64)
    if _grouped():
        dist.all_reduce(t)
    return t.tolist()


def distributed_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    rows = _gather({"labels": labels, "scores": scores})
    return auc(rows["labels"], rows["scores"])


def distributed_logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y, p = labels.astype(np.float64), np.clip(probs.astype(np.float64), eps, 1 - eps)
    total, n = all_sum(float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).sum()), float(y.size))
    return total / n


def distributed_calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted probability over mean observed rate (nan if no click)."""
    predicted, clicked = all_sum(float(probs.astype(np.float64).sum()), float(labels.sum()))
    return predicted / clicked if clicked > 0 else float("nan")


def distributed_ece(labels: np.ndarray, probs: np.ndarray) -> float:
    rows = _gather({"labels": labels, "probs": probs})
    return expected_calibration_error(rows["labels"], rows["probs"])


def distributed_click_metrics(
    click: np.ndarray,
    score: np.ndarray,
    user: np.ndarray,
    request: np.ndarray,
    probability: np.ndarray | None = None,
) -> dict[str, float]:
    """:func:`prectr.evaluation.click_metrics` of the exposed rows held by all ranks
    (``click`` 0/1; ``score`` ranks; logloss and calibration read ``probability``, the click
    probability of each row where it was shown, by default ``score``); every rank gets the
    result."""
    probability = score if probability is None else probability
    return {
        "auc": distributed_auc(click, score),
        "gauc_user": distributed_gauc(click, score, user),
        "gauc_request": distributed_gauc(click, score, request),
        "logloss": distributed_logloss(click, probability),
        "calibration": distributed_calibration(click, probability),
        "ece": distributed_ece(click, probability),
    }


def distributed_gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted GAUC over integer group keys (groups with one class skipped)."""
    rows = _route({"labels": labels, "scores": scores, "groups": groups}, groups)
    _, aucs, n, _ = group_auc(rows["labels"], rows["scores"], rows["groups"])
    ok = ~np.isnan(aucs)
    weighted, weight = all_sum(float((aucs[ok] * n[ok]).sum()), float(n[ok].sum()))
    return weighted / weight if weight else float("nan")
