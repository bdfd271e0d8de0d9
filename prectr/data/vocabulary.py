"""Vocabularies: values to dense ids, 0 for padding / missing and 1 for out-of-vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAD, OOV = 0, 1
SMALL_LOOKUP = 4096  # up to this many values, Vocabulary.lookup uses a dict


@dataclass
class Vocabulary:
    """The ids of ``values``, 2 on in their order, and how often each was seen where they were
    fitted (``counts``). A fitted vocabulary holds both as arrow arrays, one buffer each rather
    than a Python object per value (its users and queries grow with the log); one built from
    lists, or loaded from a saved one, holds lists. Saved as lists (:meth:`saved`)."""

    values: list | pa.Array
    counts: list[int] | pa.Array = field(default_factory=list)
    _ids: dict | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, values: pa.Array | pa.ChunkedArray, min_count: int = 1) -> Vocabulary:
        counted = pc.value_counts(pc.drop_null(values)).flatten()
        return cls._ordered(counted[0], counted[1].to_numpy(), min_count)

    @classmethod
    def counted(cls, counts: Mapping[Any, int], min_count: int = 1) -> Vocabulary:
        """:meth:`fit` of values already counted (value -> occurrences), the same vocabulary
        as :meth:`fit` of the values themselves."""
        counted = np.fromiter(counts.values(), np.int64, len(counts))
        return cls._ordered(pa.array(list(counts)), counted, min_count)

    @classmethod
    def _ordered(cls, values: pa.Array, counts: np.ndarray, min_count: int) -> Vocabulary:
        """The values seen at least ``min_count`` times, the most frequent first (ties by
        their text)."""
        keep = np.flatnonzero(counts >= min_count)
        text = values.take(keep).to_numpy(zero_copy_only=False).astype(str)
        order = keep[np.lexsort((text, -counts[keep]))]  # frequent first, stable
        return cls(values.take(order), pa.array(counts[order]))

    def saved(self) -> dict[str, list]:
        """The vocabulary as JSON holds it: its values and counts as lists."""
        return {name: v.to_pylist() if isinstance(v, pa.Array) else v
                for name, v in (("values", self.values), ("counts", self.counts))}  # fmt: skip

    def __len__(self) -> int:
        return len(self.values) + 2

    def lookup(self, values: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
        """Ids for ``values``: 0 for null, 1 for unseen, 2.. for known values. A few values
        (a served request) are looked up in a dict built once; many in one vectorised pass."""
        arr = pa.array(values) if isinstance(values, np.ndarray) else values
        if len(arr) <= SMALL_LOOKUP:
            if self._ids is None:
                values = self.values
                values = values.to_pylist() if isinstance(values, pa.Array) else values
                self._ids = {v: i + 2 for i, v in enumerate(values)}
            ids = [PAD if v is None else self._ids.get(v, OOV) for v in arr.to_pylist()]
            return np.array(ids, dtype=np.int32)
        if isinstance(self.values, pa.Array):
            value_set = self.values.cast(arr.type)
        else:
            value_set = pa.array(self.values, type=arr.type)
        index = pc.index_in(arr, value_set=value_set)
        ids = pc.add(index, 2).fill_null(OOV).to_numpy(zero_copy_only=False).astype(np.int32)
        null = arr.is_null()
        if null.null_count == 0 and pc.any(null).as_py():
            ids[null.to_numpy(zero_copy_only=False)] = PAD
        return ids
