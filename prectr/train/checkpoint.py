"""Checkpoints written atomically: a reader always finds the last complete one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prectr.io import atomic_file


class StopTraining(Exception):
    """Raised by a trainer's ``stop_after`` hook to imitate a run killed at a given step."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
