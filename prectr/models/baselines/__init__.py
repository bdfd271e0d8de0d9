"""Baselines; importing this package registers them."""

from prectr.models.baselines import dnn  # noqa: F401
