"""benchmarks/student.py: the FLOPs a pair that bound a pairs/s ratio."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from student import flops_per_pair


def test_flops_per_pair_counts_two_per_multiply_add_of_the_products_only() -> None:
    layer = torch.nn.Linear(3, 4, bias=False)
    pairs, other = torch.randn(5, 3), torch.randn(4, 6)

    def encode() -> torch.Tensor:
        return torch.relu(layer(pairs)) @ other  # (5, 3) x (3, 4), then (5, 4) x (4, 6)

    assert flops_per_pair(encode, 5) == 2 * (3 * 4 + 4 * 6)
    assert flops_per_pair(lambda: torch.relu(pairs) + 1, 5) == 0  # element-wise: not counted
