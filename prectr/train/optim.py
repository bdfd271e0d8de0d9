"""The optimiser of a training run, and gradient clipping that takes row-wise gradients.

By default one AdamW steps every parameter group (:func:`prectr.train.trainer.param_groups`),
the embedding tables included: every step reads and writes every row of every table, and under
``DistributedDataParallel`` the processes all-reduce each table's gradient whole (16 MB a step
for DNN on ``large``), though a batch looks up a few thousand of its rows.

With ``train.sparse_embeddings`` the tables' lookups give row-wise (sparse) gradients, which
hold only the rows the step's batch looked up. ``DistributedDataParallel`` exchanges those rows
(gloo all-reduces a sparse gradient as the union of the processes' rows), and lazy Adam
(``torch.optim.SparseAdam``) updates only them: a row no batch of the step looked up keeps its
value and its moments, where AdamW would still move it along its momentum. The other groups
keep AdamW. The tables have no weight decay either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class Optimizers:
    """Optimisers over disjoint parameters, stepped, zeroed and checkpointed as one."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state.get("optimizers")
        if states is None or len(states) != len(self.optimizers):
            raise ValueError(f"the checkpoint's optimiser state holds {len(states or [])} "
                             f"optimisers, this run steps {len(self.optimizers)}")  # fmt: skip
        for o, s in zip(self.optimizers, states, strict=True):
            o.load_state_dict(s)


def build_optimizer(
    model: nn.Module,
    groups: list[dict[str, Any]],
    sparse_embeddings: bool = False,
    fused: bool = True,
) -> torch.optim.Optimizer | Optimizers:
    """AdamW over ``groups``; with ``sparse_embeddings``, the tables of the ``embedding`` group
    switched to row-wise gradients and stepped by lazy Adam, the other groups by AdamW. With
    ``fused``, AdamW runs its fused kernel (the same update, one pass over each group).

    Call it before wrapping the model in ``DistributedDataParallel``: the wrapper reads which
    modules give sparse gradients when it is built."""
    embedding = [g for g in groups if g["name"] == "embedding"]
    if not sparse_embeddings or not embedding:
        return torch.optim.AdamW(groups, fused=fused)
    tables = {id(p) for g in embedding for p in g["params"]}
    for module in model.modules():
        if isinstance(module, nn.Embedding) and id(module.weight) in tables:
            module.sparse = True
    rest = [g for g in groups if g["name"] != "embedding"]
    lazy = torch.optim.SparseAdam(
        [{"params": g["params"], "lr": g["lr"], "name": g["name"]} for g in embedding]
    )
    return Optimizers(*([torch.optim.AdamW(rest, fused=fused)] if rest else []), lazy)


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (the same steps, so the same result on dense
    gradients) that also takes row-wise gradients: each is coalesced, one entry per row, and
    its rows count toward the norm once each. The total norm before clipping."""
    parameters = list(parameters)
    grads = []
    for p in parameters:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad._values())
        elif p.grad is not None:
            grads.append(p.grad)
    total = nn.utils.get_total_norm(grads)
    nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
