"""Checkpoints: written atomically, and never able to run code when read."""

import os

import pytest
import torch

from prectr.train.checkpoint import load_checkpoint, save_checkpoint


class Planted:
    """Unpickling this runs a command: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_round_trips_tensors_and_plain_values(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "state": {"step": 7, "best": None},
             "rng": [torch.get_rng_state()]}  # fmt: skip
    save_checkpoint(tmp_path / "last.pt", state)
    back = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["state"]["step"] == 7


def test_a_planted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "payload": Planted(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
