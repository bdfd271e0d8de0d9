import numpy as np
import torch

from prectr.cache import SlotCache


def test_slot_cache_evicts_the_least_recently_used():
    cache = SlotCache(2)
    features = {"x": np.array([[1, 1], [2, 2], [3, 3]])}
    cache.store([("a",), ("b",)], {"x": features["x"][:2]})
    assert cache.lookup([("a",)]).tolist() == [0]  # a is now the most recent
    cache.store([("c",)], {"x": features["x"][2:]})  # evicts b
    slots = cache.lookup([("a",), ("b",), ("c",)])
    assert slots[1] == -1 and len(cache) == 2
    assert cache.gather(slots[[0, 2]])["x"].tolist() == [[1, 1], [3, 3]]
    cache.store([("d",), ("e",), ("f",)], {"x": features["x"]})  # more than fits: the last 2
    assert cache.lookup([("e",), ("f",)]).min() >= 0 and cache.lookup([("d",)])[0] == -1


def test_slot_cache_stores_a_repeated_key_once_and_refreshes_a_cached_one():
    cache = SlotCache(3)
    cache.store([("a",), ("b",), ("a",)], {"x": np.array([1, 2, 3])})  # a twice: its last row
    assert len(cache) == 2 and cache.gather(cache.lookup([("a",), ("b",)]))["x"].tolist() == [3, 2]
    cache.store([("c",)], {"x": np.array([4])})
    cache.store([("b",)], {"x": np.array([5])})  # cached: rewritten in place, now the newest
    cache.store([("d",)], {"x": np.array([6])})  # evicts a, the least recently used
    slots = cache.lookup([("a",), ("b",), ("c",), ("d",)])
    assert slots[0] == -1 and len(cache) == 3
    assert cache.gather(slots[1:])["x"].tolist() == [5, 4, 6]
    assert (cache.hits, cache.misses) == (5, 1)


def test_slot_cache_holds_torch_tensors_where_they_are():
    cache = SlotCache(2)
    cache.store([b"a", b"b"], {"state": torch.tensor([[1.0, 1.0], [2.0, 2.0]])})
    cache.store([b"c"], {"state": torch.tensor([[3.0, 3.0]])})  # evicts a
    slots = cache.lookup([b"a", b"b", b"c"])
    assert slots[0] == -1
    gathered = cache.gather(slots[1:])["state"]
    assert isinstance(gathered, torch.Tensor) and gathered.tolist() == [[2.0, 2.0], [3.0, 3.0]]
