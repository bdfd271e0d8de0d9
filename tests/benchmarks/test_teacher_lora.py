"""benchmarks/teacher_lora.py: the validation pairs the teacher is chosen on."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import teacher_lora


def test_a_query_falls_on_one_side_and_the_share_holds():
    queries = [f"query {i % 400}" for i in range(2000)]
    pairs = pa.table({"query": queries, "title": [f"t{i}" for i in range(2000)],
                      "relevance": np.zeros(2000, np.int8)})  # fmt: skip
    adapt, valid = teacher_lora.split_by_query(pairs, 0.2)
    assert adapt.num_rows + valid.num_rows == 2000
    assert not set(adapt["query"].to_pylist()) & set(valid["query"].to_pylist())
    assert 0.15 < len(set(valid["query"].to_pylist())) / 400 < 0.25
    again = teacher_lora.split_by_query(pairs.slice(1000), 0.2)[1]  # by text, not by row
    assert set(again["query"].to_pylist()) == set(valid["query"].to_pylist())
