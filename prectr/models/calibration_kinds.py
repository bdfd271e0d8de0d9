"""The post-hoc calibration maps by name (``train.calibration``, ``prectr calibrate
--method``), apart from :mod:`prectr.models.calibration` so that the command line lists them
without loading PyTorch."""

from typing import Literal, get_args

Kind = Literal["none", "platt", "isotonic"]
KINDS: tuple[str, ...] = get_args(Kind)
