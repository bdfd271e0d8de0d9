"""Checkpoints written atomically: a reader always finds the last complete one.

They are read with ``weights_only=True``: tensors, numbers, strings and containers of them,
never arbitrary pickled objects, so a run directory someone else wrote cannot execute code
when it is resumed, evaluated, exported or served.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from prectr.io import atomic_file


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused, it holds objects other than tensors and plain values ({err})"
        ) from err
