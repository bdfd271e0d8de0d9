"""The run's optimiser with row-wise embedding gradients, and clipping that takes them."""

import json

import pytest
import torch
from torch import nn

from prectr.train.optim import Optimizers, build_optimizer, clip_grad_norm
from prectr.train.trainer import Trainer
from tests.conftest import tiny_config


class _Tower(nn.Module):
    """One table and one dense layer, grouped as the trainer groups them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(6, 3, padding_idx=0)
        self.dense = nn.Linear(3, 1)

    def groups(self) -> list[dict]:
        return [
            {"params": [self.table.weight], "lr": 0.1, "weight_decay": 0.0, "name": "embedding"},
            {"params": list(self.dense.parameters()), "lr": 0.01, "weight_decay": 1e-5,
             "name": "dense"},
        ]  # fmt: skip

    def step(self, optimizer, ids: list[int]) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.dense(self.table(torch.tensor(ids))).sum().backward()
        optimizer.step()


def test_lazy_adam_leaves_a_row_no_batch_of_the_step_looked_up_where_it_was():
    moved = {}
    for sparse in (False, True):
        tower = _Tower()
        optimizer = build_optimizer(tower, tower.groups(), sparse)
        tower.step(optimizer, [1, 2, 2])
        before = tower.table.weight.detach().clone()
        tower.step(optimizer, [2, 3, 0])  # rows 1, 4 and 5 unseen; 0 is padding
        after = tower.table.weight.detach()
        moved[sparse] = [not torch.equal(before[r], after[r]) for r in range(6)]
    assert moved[True] == [False, False, True, True, False, False]
    # AdamW carries row 1 along its momentum from the first step
    assert moved[False] == [False, True, True, True, False, False]


def test_sparse_embeddings_step_the_tables_by_lazy_adam_and_the_rest_by_adamw():
    tower = _Tower()
    optimizer = build_optimizer(tower, tower.groups(), sparse_embeddings=True)
    assert isinstance(optimizer, Optimizers) and tower.table.sparse
    kinds = [type(o) for o in optimizer.optimizers]
    assert kinds == [torch.optim.AdamW, torch.optim.SparseAdam]
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"dense": 0.01,
                                                                    "embedding": 0.1}  # fmt: skip
    dense = _Tower()
    assert isinstance(build_optimizer(dense, dense.groups()), torch.optim.AdamW)
    assert not dense.table.sparse


def test_a_state_for_other_optimisers_is_refused():
    tower = _Tower()
    optimizer = build_optimizer(tower, tower.groups(), sparse_embeddings=True)
    with pytest.raises(ValueError, match="holds 1 optimisers, this run steps 2"):
        optimizer.load_state_dict({"optimizers": [optimizer.optimizers[0].state_dict()]})


def test_clipping_counts_each_looked_up_row_once_and_matches_torch_on_dense_gradients():
    ids = [1, 1, 2, 2, 2, 5]
    norms, grads = {}, {}
    for sparse in (False, True):
        tower = _Tower()
        tower.table.sparse = sparse
        (tower.dense(tower.table(torch.tensor(ids))).sum() * 100).backward()
        norms[sparse] = clip_grad_norm(tower.parameters(), 1.0)
        grads[sparse] = [p.grad.to_dense() if sparse else p.grad for p in tower.parameters()]
    reference = _Tower()
    (reference.dense(reference.table(torch.tensor(ids))).sum() * 100).backward()
    expected = nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    assert torch.equal(norms[False], expected)
    assert all(
        torch.equal(g, p.grad) for g, p in zip(grads[False], reference.parameters(), strict=True)
    )
    torch.testing.assert_close(norms[True], expected)
    for a, b in zip(grads[True], grads[False], strict=True):
        torch.testing.assert_close(a, b)
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads[True]])) == (
        pytest.approx(1.0, abs=1e-5)
    )


def test_a_run_with_sparse_embeddings_trains_on_tiny(tiny_world, tmp_path):
    config = tiny_config(tiny_world, sparse_embeddings=True)
    trainer = Trainer(config, tmp_path / "run")
    untrained = trainer.validate()["auc"]
    tables = trainer.model.tower.embedding.tables
    start = {name: table.weight.detach().clone() for name, table in tables.items()}
    metrics = trainer.fit()
    assert isinstance(trainer.optimizer.optimizers[-1], torch.optim.SparseAdam)
    assert metrics["best_valid"]["auc"] >= untrained + 0.05
    assert [n for n, t in tables.items() if not torch.equal(t.weight, start[n])] == list(start)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["steps"] == metrics["steps"] > 0


def test_the_fused_kernel_steps_every_group_as_the_per_tensor_loop_does():
    # each group's own learning rate and weight decay, over several steps with momentum
    towers, optimizers = {}, {}
    for fused in (False, True):
        towers[fused] = _Tower()
        optimizers[fused] = build_optimizer(towers[fused], towers[fused].groups(), fused=fused)
        assert optimizers[fused].defaults["fused"] is fused
        for ids in ([1, 2, 2], [2, 3, 0], [4, 5, 1], [1, 1, 1]):
            towers[fused].step(optimizers[fused], ids)
    start = _Tower()
    for name, p in towers[True].named_parameters():
        unfused, initial = (
            dict(towers[False].named_parameters())[name],
            dict(start.named_parameters())[name],
        )
        assert not torch.equal(p, initial)
        torch.testing.assert_close(p, unfused, rtol=1e-6, atol=1e-7)
