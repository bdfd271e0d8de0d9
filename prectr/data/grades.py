"""Other grade scales mapped onto the schema's relevance grades 0-3 (the ESCI meaning).

A grade map names, for each value of a data set's own scale, the grade 0-3 it means: ``0:0,1:2,2:3``
for a 3-level set (bad, fair, good), ``1:0,2:1,3:2,4:3,5:3`` for a 5-star one. The loaders apply
it when they write a log (``prectr load pairs --grade-map``), the encoder and teacher commands
when they read one (``--grade-map``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.tables import GRADES


def parse_grade_map(text: str) -> dict[int, int]:
    """``"0:0,1:2,2:3"`` as ``{0: 0, 1: 2, 2: 3}``; each target must be a grade 0-3."""
    mapping: dict[int, int] = {}
    for item in text.split(","):
        source, sep, target = item.partition(":")
        try:
            if not sep:
                raise ValueError
            key, value = int(source), int(target)
        except ValueError:
            raise ValueError(
                f"grade map {text!r}: {item!r} is not FROM:TO (two integers)"
            ) from None
        if value not in GRADES:
            raise ValueError(f"grade map {text!r}: {item!r} maps onto {value}, not a grade 0-3")
        if key in mapping:
            raise ValueError(f"grade map {text!r}: {key} is mapped twice")
        mapping[key] = value
    return mapping


def format_grade_map(grade_map: dict[int, int]) -> str:
    """The map as ``parse_grade_map`` reads it, keys in order."""
    return ",".join(f"{k}:{v}" for k, v in sorted(grade_map.items()))


def map_grades(
    grades: pa.Array | pa.ChunkedArray, grade_map: dict[int, int], where: str
) -> pa.Array:
    """``grades`` (integers, nulls kept) mapped onto 0-3 as ``int8``. A value the map does not
    name is refused with its 0-based row, ``where`` saying which file or table it is in."""
    if not pa.types.is_integer(grades.type):
        raise ValueError(f"{where}: the grades are {grades.type}; a grade map needs integers")
    keys = pa.array(list(grade_map), grades.type)
    index = pc.index_in(grades, value_set=keys)
    unknown = index.is_null().to_numpy(False) & grades.is_valid().to_numpy(False)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ValueError(f"{where} row {row}: relevance {grades[row].as_py()} is not in the "
                         f"grade map {format_grade_map(grade_map)} ({int(unknown.sum()):,} "
                         "rows)")  # fmt: skip
    return pa.array(list(grade_map.values()), pa.int8()).take(index)
