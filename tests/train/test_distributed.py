"""Training in several gloo processes on CPU, as torchrun launches them."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from prectr.evaluation import click_metrics
from prectr.train.checkpoint import load_checkpoint
from prectr.train.data import load_prepared
from prectr.train.distributed import end_group, join
from prectr.train.predict import predict
from prectr.train.run import load_trained
from prectr.train.stages import StopTraining
from prectr.train.trainer import Trainer
from tests.conftest import leave_spawned_process, tiny_config


def _in_group(rank: int, world: int, init: str, work, *args) -> None:
    """A process whose group a launcher set up already (as Ray Train's TorchTrainer does),
    running ``work(*args)``; the group is the launcher's to destroy."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        work(*args)
    except BaseException:
        end_group(clean=False)
        raise
    end_group()
    leave_spawned_process()


def in_processes(tmp_path, name: str, work, *args, processes: int = 2) -> None:
    """Run ``work(*args)`` (a module-level function) in ``processes`` gloo processes that meet
    through the file ``tmp_path / name``."""
    init = f"file://{tmp_path / name}"
    mp.spawn(_in_group, args=(processes, init, work, *args), nprocs=processes, join=True)


def _train(config, run: str, stop_after, resume) -> None:
    trainer = Trainer(config, run, resume=resume, stop_after=stop_after)
    with contextlib.suppress(StopTraining):  # the run killed at step ``stop_after``
        trainer.fit()
    trainer.close()  # the trainer lets go of the group, the launcher destroys it


def _joined_and_left(rank: int, port: int, joined) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    processes = join("gloo")
    owned = processes.owns_group and dist.is_initialized()
    processes.leave()
    joined[rank] = owned and not dist.is_initialized()


def _failed_while_the_other_exchanges(rank: int, port: int, seconds) -> None:
    """Process 0 fails before the step's collective that process 1 already waits in; each
    leaves as a failed run does. How long each took to leave goes to ``seconds``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    processes = join("gloo", timeout_minutes=0.5)
    start = time.perf_counter()
    try:
        if rank == 0:
            raise RuntimeError("a step failed in process 0")
        processes.sum(1.0)  # never answered: process 0 has failed
    except Exception:  # the failure under test, in either process
        processes.leave(clean=False)
    seconds[rank] = time.perf_counter() - start


def test_a_process_that_fails_does_not_hold_the_others_until_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds = mp.Manager().dict()
    mp.spawn(_failed_while_the_other_exchanges, args=(port, seconds), nprocs=2, join=True)
    assert max(seconds.values()) < 10, dict(seconds)  # the group's timeout is 30 s


def test_a_group_joined_from_torchruns_environment_is_left_by_the_run(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    joined = mp.Manager().dict()
    mp.spawn(_joined_and_left, args=(port, joined), nprocs=2, join=True)
    assert dict(joined) == {0: True, 1: True}


def test_a_group_a_launcher_set_up_is_the_launchers_to_destroy(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'one'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        processes = join("gloo")
        processes.leave()
        assert not processes.owns_group and dist.is_initialized()
    finally:
        dist.destroy_process_group()


def _tables_after(config, run: str, out: str) -> None:
    """Train ``config`` until its ``stop_after`` step, then save this process's tables."""
    trainer = Trainer(config, run, stop_after=6)
    with contextlib.suppress(StopTraining):
        trainer.fit()
    tables = trainer.model.tower.embedding.tables
    torch.save({k: t.weight.detach() for k, t in tables.items()}, f"{out}.{dist.get_rank()}")
    trainer.close()


@pytest.mark.slow
def test_sparse_embedding_rows_stay_identical_across_processes(tiny_world, tmp_path):
    config = tiny_config(tiny_world, threads=1, sparse_embeddings=True)
    out = str(tmp_path / "tables")
    in_processes(tmp_path, "init", _tables_after, config, str(tmp_path / "run"), out)
    ranks = [torch.load(f"{out}.{r}") for r in (0, 1)]
    # rank 0's initial rows
    start = Trainer(config, tmp_path / "fresh").model.tower.embedding.tables
    for name, table in start.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        moved = (ranks[0][name] != table.weight.detach()).any(1)
        assert 0 < int(moved.sum()) < len(moved), name  # some rows looked up, not every row


@pytest.mark.slow
def test_a_run_killed_in_two_processes_and_resumed_in_two_ends_exactly_the_same(
    tiny_world, tmp_path
):
    config = tiny_config(tiny_world, checkpoint_every=5, threads=1)
    in_processes(tmp_path, "a", _train, config, str(tmp_path / "whole"), None, False)
    in_processes(tmp_path, "b", _train, config, str(tmp_path / "killed"), 12, False)
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["state"]["step"] == 10
    in_processes(tmp_path, "c", _train, config, str(tmp_path / "killed"), None, True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_a_run_killed_in_two_processes_resumes_in_one_reading_each_row_once(tiny_world, tmp_path):
    config = tiny_config(tiny_world, checkpoint_every=5, threads=1)
    run = tmp_path / "run"
    in_processes(tmp_path, "rendezvous", _train, config, str(run), 12, False)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["step"] == 10 and len(last["rng"]) == 2  # both processes' RNG
    assert len(last["state"]["position"]) == config.data.shards  # every shard's progress

    resumed = Trainer(config, run, resume=True).fit()
    shards = load_prepared(run).shards["train"]
    exposed = sum(int(pc.sum(pc.is_valid(pq.read_table(p)["click"])).as_py()) for p in shards)
    assert resumed["processes"] == 1 and resumed["train_samples"] == exposed


@pytest.mark.slow
def test_prectr_train_runs_unchanged_under_torchrun(tiny_world, tmp_path):
    config_path, run = tmp_path / "dnn.yaml", tmp_path / "run"
    # uncalibrated, so the reloaded model is the one the validation metrics were computed on
    config = tiny_config(tiny_world, threads=1, calibration="none")
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc-per-node", "2", "-m", "prectr.cli"]  # fmt: skip
    done = subprocess.run(
        [*launch, "train", str(config_path), "--out", str(run)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["peak_rss_mb_per_process"]) == 2
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    train = [x["step"] for x in lines if x["split"] == "train"]
    assert len(train) == len(set(train)) and [x["split"] for x in lines].count("valid") == 1
    # the validation metrics computed across the processes equal one process's on the model
    trained = load_trained(run)
    data = load_prepared(run)
    p = predict(trained.model, data.stream("valid", trained.config, shuffle=False).epoch())
    e = p["exposed"]
    click, user, request = (
        p["click"][e].astype(np.int64),
        data.user_of_request[p["request"][e]],
        p["request"][e],
    )
    single = click_metrics(click, p["score"][e], user, request)
    shown = click_metrics(click, p["shown"][e], user, request)  # where each row was shown
    single |= {k: shown[k] for k in ("logloss", "calibration", "ece")}
    for name, value in metrics["best_valid"].items():
        if name not in ("epoch", "step"):  # where the best validation was
            assert value == pytest.approx(single[name], abs=1e-9), name


def _trained_weights(rank: int, world: int, init: str, config, run: str, out: str) -> None:
    """Train ``config`` in process ``rank`` of ``world`` and save this process's weights."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    trainer = Trainer(config, run)
    trainer.fit()
    torch.save(trainer.model.state_dict(), f"{out}.{rank}")
    trainer.close()
    end_group()
    leave_spawned_process()


@pytest.mark.slow
@pytest.mark.parametrize("negatives", ["synthetic", "unexposed"])
def test_prectr_v2_in_two_processes_matches_one_process_with_the_same_global_batch(
    tiny_world, tmp_path, negatives
):
    """PRECTR-V2 (cross-user mining, hard negatives of each kind, consistency) in 2 gloo
    processes, each reading its shards in half-batches, against one process reading whole
    batches: the processes end with the same weights, and the run with the one-process run's
    validation metrics within what a different order of the same rows moves them. Unexposed
    negatives draw each process's partners from its own half, and their batches hold every
    candidate, fewer requests each, so halves round to more steps."""
    config = tiny_config(tiny_world, {"batch_size": 512}, threads=1, calibration="none")
    config.model, config.name = "prectr_v2", "tiny_prectr_v2"
    config.model_params = {"hidden": [32, 16], "debias_negatives": negatives}
    config.features.relevance_context = True
    out = str(tmp_path / "weights")
    mp.spawn(_trained_weights, args=(2, f"file://{tmp_path / 'init'}", config,
                                     str(tmp_path / "two"), out), nprocs=2, join=True)  # fmt: skip
    ranks = [torch.load(f"{out}.{r}") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = Trainer(config, tmp_path / "one").fit()
    assert two["processes"] == 2 and one["processes"] == 1
    # a step takes about a global batch: the process with more rows sets the count, and a
    # batch ends at a request's end (with unexposed negatives, whose batches of every
    # candidate hold few requests, one process took 232 steps and two 212)
    assert 0.9 * one["steps"] <= two["steps"] <= 1.1 * one["steps"]
    # measured (unexposed negatives at debias_weight 0.03): 0.0106 and 0.0065; one process
    # over train seeds 0, 1, 2 spans 0.015 (AUC) and 0.0067 (logloss) on this world
    for name, within in (("auc", 0.015), ("logloss", 0.01)):
        assert two["best_valid"][name] == pytest.approx(one["best_valid"][name], abs=within)
