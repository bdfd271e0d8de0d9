"""Distributed metrics with 2 gloo processes on CPU equal the single-process values."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from prectr.evaluation import click_metrics
from prectr.metrics import auc, gauc, logloss
from prectr.metrics.distributed import (
    distributed_auc,
    distributed_click_metrics,
    distributed_gauc,
    distributed_logloss,
)
from prectr.train.distributed import end_group
from tests.conftest import leave_spawned_process


def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 5000
    groups = rng.integers(0, 400, n)
    scores = rng.random(n).round(2)  # ties, within and across groups
    labels = (rng.random(n) < 0.2 + 0.5 * scores).astype(np.int64)
    grades = rng.integers(0, 4, n)
    shard = rng.integers(0, 2, n)  # a group's rows are spread over both ranks
    return {"groups": groups, "scores": scores, "labels": labels, "grades": grades,
            "shard": shard}  # fmt: skip


def worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    d = data()
    mine = {k: v[d["shard"] == rank] for k, v in d.items()}
    clicks = distributed_click_metrics(
        mine["labels"], mine["scores"], mine["groups"], mine["grades"]
    )  # grades stand in for a second grouping (requests)
    result = {
        **{f"click.{k}": v for k, v in clicks.items()},
        "auc": distributed_auc(mine["labels"], mine["scores"]),
        "logloss": distributed_logloss(mine["labels"], mine["scores"]),
        "gauc": distributed_gauc(mine["labels"], mine["scores"], mine["groups"]),
    }
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    end_group()
    leave_spawned_process()


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(worker, args=(2, init, str(tmp_path / "result")), nprocs=2, join=True)
    d = data()
    clicks = click_metrics(d["labels"], d["scores"], d["groups"], d["grades"])
    expected = {
        **{f"click.{k}": v for k, v in clicks.items()},
        "auc": auc(d["labels"], d["scores"]),
        "logloss": logloss(d["labels"], d["scores"]),
        "gauc": gauc(d["labels"], d["scores"], d["groups"]),
    }
    for rank in range(2):
        got = json.loads((tmp_path / f"result.{rank}").read_text())
        for name, value in expected.items():
            assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-12), name


def test_without_a_process_group_they_are_the_single_process_metrics():
    d = data()
    got = distributed_click_metrics(d["labels"], d["scores"], d["groups"], d["grades"])
    assert got == click_metrics(d["labels"], d["scores"], d["groups"], d["grades"])
