"""benchmarks/crowd_content.py: the crowd variants move the crowd's sequences and nothing else."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from crowd_content import with_crowd

from tests.models.conftest import batch, world  # noqa: F401 (fixtures)

CROWD = ["crowd_items", "crowd_categories", "crowd_match", "crowd_clicks"]


def test_variants_change_the_crowd_and_nothing_else(batch) -> None:  # noqa: F811
    logged, none, other = (next(with_crowd([batch], CROWD, v)) for v in ("logged", "none", "other"))
    assert logged is batch
    for name, ids in batch.sequences.items():
        if name not in CROWD:
            assert torch.equal(none.sequences[name], ids)
            assert torch.equal(other.sequences[name], ids)
            continue
        assert not none.sequences[name].any()
        assert not torch.equal(other.sequences[name], ids)  # rows moved
        assert torch.equal(other.sequences[name].sort(0).values, ids.sort(0).values)
    assert torch.equal(none.categorical, batch.categorical)
