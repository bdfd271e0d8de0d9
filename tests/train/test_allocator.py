import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from prectr.train import allocator, engine
from prectr.train.allocator import MAX_MB, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a "step" that allocates 200 arrays of 96 KB (below glibc's mmap threshold: on its heap),
# touches them and frees them all; page faults are counted over 20 steps after the first
CHURN = """
import resource, sys
import numpy as np
from prectr.train.allocator import keep_freed_memory
keep_freed_memory(int(sys.argv[1]))
def step():
    arrays = [np.ones(12_000) for _ in range(200)]
    del arrays
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(megabytes: int) -> int:
    run = subprocess.run([sys.executable, "-c", CHURN, str(megabytes)], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return int(run.stdout)


@pytest.mark.skipif(not GLIBC, reason="the allocator is tuned on glibc only")
def test_kept_memory_serves_the_next_step_without_page_faults():
    default, kept = faults(0), faults(64)
    # by default each step's 19 MB are handed back and faulted in again (about 4,700 pages)
    assert default > 20 * 2_000
    assert kept < default / 10


def test_zero_leaves_the_allocator_alone_and_a_size_out_of_range_is_an_error():
    assert keep_freed_memory(0) is False
    for bad in (-1, MAX_MB + 1):
        with pytest.raises(ValueError, match="keep_freed_mb"):
            keep_freed_memory(bad)


def test_elsewhere_than_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert keep_freed_memory(64) is False


def test_every_training_loop_sets_it(monkeypatch):
    asked = []
    monkeypatch.setattr(engine, "keep_freed_memory", asked.append)
    model = nn.Linear(2, 1)
    engine.Engine({"model": model}, torch.optim.SGD(model.parameters(), 0.1), keep_freed_mb=7)
    engine.Engine({"model": model}, torch.optim.SGD(model.parameters(), 0.1))
    assert asked == [7, allocator.KEEP_FREED_MB]
