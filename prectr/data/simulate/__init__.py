"""The simulated marketplace: prectr's embedded default data set."""

from prectr.data.simulate.config import PRESETS, WorldConfig, load_config
from prectr.data.simulate.generate import simulate
from prectr.data.simulate.state import split_days
from prectr.data.simulate.world import ReplayResult, World

__all__ = [
    "PRESETS",
    "ReplayResult",
    "World",
    "WorldConfig",
    "load_config",
    "simulate",
    "split_days",
]
