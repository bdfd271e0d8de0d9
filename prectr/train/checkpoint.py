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
from torch import nn

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


def load_into(module: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` (read from the checkpoint ``path``) into ``module``; a state that does not
    fit the module the run's config builds today is refused naming the checkpoint."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: its parameters do not fit the model that its run's config.yaml builds "
            "today; a default may have changed since it was trained (PRECTR's "
            "model_params.target_attention became false: a run trained before sets it true in "
            f"its config.yaml), or retrain. {str(err).splitlines()[0]}"
        ) from None
