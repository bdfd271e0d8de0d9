"""Ranking models, registered by name."""

from prectr.models.registry import MODELS, RankingModel, build_model, register

__all__ = ["MODELS", "RankingModel", "build_model", "register"]
