"""The simulated marketplace: prectr's embedded default data set."""

from prectr.data.simulate.config import PRESETS, WorldConfig, load_config
from prectr.data.simulate.world import ReplayResult, World, simulate, split_days

__all__ = [
    "PRESETS",
    "ReplayResult",
    "World",
    "WorldConfig",
    "load_config",
    "simulate",
    "split_days",
]
