"""Baselines; importing this package registers them."""

from prectr.models.baselines import dcnv2, deepfm, din, dnn, lr, two_model  # noqa: F401
