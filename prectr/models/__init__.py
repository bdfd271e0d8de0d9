"""Ranking models, registered by name (loaded on first use: :mod:`prectr.lazy`)."""

from typing import TYPE_CHECKING

from prectr.lazy import lazy_exports

if TYPE_CHECKING:
    from prectr.models.registry import MODELS, RankingModel, build_model, register

__all__ = ["MODELS", "RankingModel", "build_model", "register"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "registry"))
