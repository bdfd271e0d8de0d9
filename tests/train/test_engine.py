"""The training engine: early stopping on a named metric, best/last checkpoints, exact resume."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from prectr.train import engine
from prectr.train.checkpoint import load_checkpoint
from prectr.train.engine import Engine
from prectr.train.stages import Stage, Step, Stopping, StopTraining

X = torch.randn(96, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])


class Toy:
    """A small regression with dropout (so the RNG state matters) whose epoch order is a
    function of (seed, epoch), trained on an engine."""

    def __init__(self, directory=None, init_seed=0, **engine):
        torch.manual_seed(init_seed)
        self.model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.2), nn.Linear(16, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        self.engine = Engine({"model": self.model}, self.optimizer, directory=directory,
                             clip_norm=1.0, **engine)  # fmt: skip

    def steps(self, epoch, steps_done):
        order = np.random.default_rng([7, epoch]).permutation(len(Y))
        for start in range(steps_done * 8, len(Y), 8):
            yield Step(order[start : start + 8], 8)

    def loss(self, rows):
        return {"loss": ((self.model(X[rows]).squeeze(1) - Y[rows]) ** 2).mean()}

    def stage(self, epochs, **options):
        return Stage("train", epochs, self.steps, self.loss, **options)

    def fit(self, stage):
        with self.engine:
            self.engine.run(stage)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("metric", "scores"),
    [("logloss", [0.5, 0.4, 0.45, 0.41, 0.39, 0.3]), ("auc", [0.5, 0.6, 0.55, 0.59, 0.61, 0.7])],
)
def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(tmp_path, metric, scores):
    toy = Toy(tmp_path, stopping=Stopping(metric, patience=2), log_every=4)
    seen = []

    def validate():
        seen.append(weights(toy.model))
        return {metric: scores[len(seen) - 1]}

    stage = toy.stage(len(scores), validate=validate)
    toy.fit(stage)
    # best at epoch 1; epochs 2 and 3 are no better: the run stops before epoch 4
    assert len(seen) == 4 and toy.engine.epochs("train") == 4
    assert toy.engine.stopped_early(stage)
    assert toy.engine.state["best"] == {metric: scores[1], "epoch": 1, "step": 24}
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(best[k], v) for k, v in seen[1].items())
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(last[k], v) for k, v in toy.model.state_dict().items())
    toy.engine.load_best()
    assert all(torch.equal(toy.model.state_dict()[k], v) for k, v in seen[1].items())
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x[metric] for x in lines if x["split"] == "valid"] == scores[:4]
    assert [x["step"] for x in lines if x["split"] == "train"] == list(range(4, 49, 4))


def test_an_undefined_validation_figure_is_the_worst_and_does_not_block_later_ones() -> None:
    stopping, nan = Stopping("spearman"), float("nan")
    assert stopping.better({"spearman": 0.1}, {"spearman": nan})
    assert not stopping.better({"spearman": nan}, {"spearman": 0.1})
    assert not stopping.better({"spearman": nan}, {"spearman": nan})
    assert stopping.better({"spearman": 0.2}, {"spearman": 0.1})
    assert Stopping("logloss").better({"logloss": 0.3}, {"logloss": nan})


def test_without_patience_or_a_directory_every_epoch_runs_and_the_best_is_kept_in_memory():
    toy = Toy(stopping=Stopping("logloss"))
    seen, scores = [], [0.3, 0.4, 0.5, 0.6]

    def validate():
        seen.append(weights(toy.model))
        return {"logloss": scores[len(seen) - 1]}

    stage = toy.stage(4, validate=validate)
    toy.fit(stage)
    assert toy.engine.epochs("train") == 4 and not toy.engine.stopped_early(stage)
    toy.engine.load_best()
    assert all(torch.equal(toy.model.state_dict()[k], v) for k, v in seen[0].items())


def test_validating_every_few_steps_stops_inside_an_epoch_and_scores_the_last_steps(tmp_path):
    toy = Toy(tmp_path, stopping=Stopping("logloss", patience=2))
    steps = []

    def validate():
        steps.append(toy.engine.state["step"])
        return {"logloss": 1.0}  # never better than the first

    stage = toy.stage(3, validate=validate, validate_every=5)
    toy.fit(stage)
    assert steps == [5, 10, 15] and toy.engine.state["step"] == 15
    assert toy.engine.stopped_early(stage) and toy.engine.epochs("train") == 1
    steps.clear()
    toy = Toy(tmp_path / "b", stopping=Stopping("logloss"))
    toy.fit(toy.stage(1, validate=validate, validate_every=5, max_steps=7))
    assert steps == [5, 7]  # and once after the last step


@pytest.mark.parametrize("validate_every", [0, 5], ids=["per-epoch", "every-5-steps"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_log(tmp_path, validate_every):
    def run(directory, init_seed=0, **options):
        toy = Toy(directory, init_seed, stopping=Stopping("logloss", 3), log_every=2,
                  checkpoint_every=3, **options)  # fmt: skip

        @torch.no_grad()
        def validate():
            toy.model.eval()
            return {"logloss": float(((toy.model(X).squeeze(1) - Y) ** 2).mean())}

        return toy, toy.stage(3, validate=validate, validate_every=validate_every)

    whole, stage = run(tmp_path / "whole")
    whole.fit(stage)
    killed, stage = run(tmp_path / "killed", stop_after=17)  # epoch 1, step 5 of 12
    with pytest.raises(StopTraining):
        killed.fit(stage)
    with open(tmp_path / "killed" / "train_log.jsonl", "a") as f:
        f.write('{"step": 18, "ep')  # a line the kill cut short
    resumed, stage = run(tmp_path / "killed", init_seed=1)  # replaced by the checkpoint
    assert resumed.engine.resume()["state"]["step"] == 15
    resumed.fit(stage)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert resumed.engine.state["best"] == whole.engine.state["best"]
    assert whole.engine.state["step"] == 36
    for name in ("best", "last"):
        a = load_checkpoint(tmp_path / "whole" / "checkpoints" / f"{name}.pt")["model"]
        b = load_checkpoint(tmp_path / "killed" / "checkpoints" / f"{name}.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # the lines the killed run wrote after its checkpoint are dropped, not written twice
    assert log_lines(tmp_path / "killed") == log_lines(tmp_path / "whole")


def log_lines(directory):
    lines = [json.loads(x) for x in (directory / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k != "samples_per_s"} for x in lines]


class Bar:
    """A stand-in for tqdm that records (steps shown, total) after each step."""

    def __init__(self, **options):
        self.n, self.total, self.seen = 0, None, []

    def reset(self, total):
        self.n, self.total = 0, total

    def update(self, n=1):
        self.n += n
        if n == 1:  # a step, not the bar placed at a resumed run's position
            self.seen.append((self.n, self.total))

    def set_description(self, text):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ({"steps_per_epoch": 12}, [(n, 36) for n in range(1, 37)]),
        ({"steps_per_epoch": 12, "max_steps": 20}, [(n, 20) for n in range(1, 21)]),
        ({}, [(n, None) for n in range(1, 13)] + [(n, 36) for n in range(13, 37)]),
    ],
    ids=["known", "max-steps", "learnt-from-the-first-epoch"],
)  # fmt: skip
def test_the_progress_bar_counts_steps_towards_the_runs_total_for_the_eta(
    monkeypatch, options, shown
):
    bars = []
    monkeypatch.setattr(engine, "tqdm", lambda **o: bars.append(Bar(**o)) or bars[-1])
    toy = Toy()
    toy.fit(toy.stage(3, **options))
    assert bars[0].seen == shown


def test_a_resumed_runs_progress_starts_where_the_checkpoint_was(tmp_path, monkeypatch):
    bars = []
    monkeypatch.setattr(engine, "tqdm", lambda **o: bars.append(Bar(**o)) or bars[-1])
    killed = Toy(tmp_path, checkpoint_every=3, stop_after=17)
    with pytest.raises(StopTraining):
        killed.fit(killed.stage(3, steps_per_epoch=12))
    resumed = Toy(tmp_path, checkpoint_every=3)
    resumed.engine.resume()
    resumed.fit(resumed.stage(3, steps_per_epoch=12))
    assert bars[1].seen == [(n, 36) for n in range(16, 37)]  # from the checkpoint at step 15
