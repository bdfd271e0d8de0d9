"""benchmarks/profile_step.py: forward and backward time go to the submodule that ran them."""

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import profile_step


def test_each_submodules_forward_and_backward_are_charged_to_it():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(256, 1))
    )
    profile_step.label_modules(model, depth=1)  # "0", "1", "2"; not "2.0"
    loss = profile_step.labelled("loss", torch.nn.functional.mse_loss)
    x, y = torch.randn(512, 64), torch.randn(512, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss(model(x), y).backward()
    times = profile_step.attribute(prof.events(), {"0", "1", "2", "2.0", "loss"})
    assert "2.0" not in times  # deeper than --depth: its time is its parent's
    for label in ("0", "2", "loss"):
        forward, backward = times[label]
        assert forward > 0 and backward > 0, label
    forward, backward = times["1"]  # the ReLU: its forward, and the backward of its node
    assert forward > 0 and backward > 0
