"""A bounded least-recently-used cache of arrays, one slot per key."""

from __future__ import annotations

from itertools import repeat

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


class SlotCache:
    """A bounded LRU of arrays (numpy, or torch tensors on any device): one slot per key in
    preallocated arrays. The ranker keeps encoded item features in one, a scoring student its
    texts' states.

    A call's keys are found (one C-level pass over a dict), gathered (one indexing step per
    array) and marked as used (a per-slot clock) without a loop over them in Python; when new
    keys need room, the least recently used slots are found in one partition of the clock."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("the cache needs a capacity of at least 1")
        self.capacity, self.slots = capacity, {}
        self.keys: list = [None] * capacity  # the key in each slot
        self.used = np.zeros(capacity, np.int64)  # the clock at each slot's last use
        self.clock = 0
        self.arrays: dict[str, Array] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.slots)

    def lookup(self, keys: list) -> np.ndarray:
        """Each key's slot, -1 when it is not cached (hits become the most recent)."""
        slots = np.fromiter(map(self.slots.get, keys, repeat(-1)), np.int64, len(keys))
        found = slots[slots >= 0]
        self.clock += 1
        self.used[found] = self.clock
        self.hits, self.misses = self.hits + found.size, self.misses + len(keys) - found.size
        return slots

    def gather(self, slots: np.ndarray) -> dict[str, Array]:
        return {k: v[_index(slots, v)] for k, v in self.arrays.items()}

    def store(self, keys: list, features: dict[str, Array]) -> None:
        """Cache the rows of ``keys`` (row ``j`` of each array; a repeated key keeps its last
        row), evicting the least recently used keys beyond the capacity."""
        if not self.arrays:
            self.arrays = {k: _empty(v, self.capacity) for k, v in features.items()}
        last = {key: j for j, key in enumerate(keys)}  # distinct keys, in order
        new, rows = list(last)[-self.capacity :], list(last.values())[-self.capacity :]
        slots = np.fromiter(map(self.slots.get, new, repeat(-1)), np.int64, len(new))
        self.clock += 1
        self.used[slots[slots >= 0]] = self.clock  # stored again: not evicted for the new
        absent = np.flatnonzero(slots < 0)
        free = np.arange(len(self.slots), min(len(self.slots) + absent.size, self.capacity))
        evict = absent.size - free.size
        if evict:
            filled = len(self.slots)
            oldest = (np.arange(filled) if evict == filled
                      else np.argpartition(self.used[:filled], evict - 1)[:evict])  # fmt: skip
            for slot in oldest.tolist():
                del self.slots[self.keys[slot]]
            free = np.concatenate([free, oldest])
        slots[absent] = free
        for i, slot in zip(absent.tolist(), free.tolist(), strict=True):
            self.slots[new[i]] = slot
            self.keys[slot] = new[i]
        self.used[slots] = self.clock
        rows = np.asarray(rows, np.int64)
        for k, v in features.items():
            self.arrays[k][_index(slots, v)] = v[_index(rows, v)]


def _empty(like: Array, rows: int) -> Array:
    """An uninitialised array of ``rows`` rows shaped, typed and placed like ``like``'s rows."""
    if isinstance(like, torch.Tensor):
        return like.new_empty((rows, *like.shape[1:]))
    return np.empty((rows, *like.shape[1:]), like.dtype)


def _index(index: np.ndarray, array: Array) -> np.ndarray | torch.Tensor:
    """``index`` in the form ``array`` is indexed with."""
    return torch.from_numpy(index).to(array.device) if isinstance(array, torch.Tensor) else index
