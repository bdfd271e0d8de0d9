"""benchmarks/prepare_memory.py: two prepared runs compared file for file."""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import prepare_memory


def _run(root: Path, values: list[int], groups: int = 1) -> Path:
    (root / "data" / "train").mkdir(parents=True)
    np.savez(root / "data" / "features.npz", **{"request.user_id": np.array(values, np.int32)})
    table = pa.table({"request_row": values})
    pq.write_table(table, root / "data" / "train" / "part-00000.parquet",
                   row_group_size=-(-len(values) // groups))  # fmt: skip
    return root


def test_differences_name_a_changed_array_a_changed_shard_and_a_missing_file(tmp_path):
    first = _run(tmp_path / "a", [1, 2, 3, 4])
    assert prepare_memory.differences(first, _run(tmp_path / "b", [1, 2, 3, 4])) == []
    changed = _run(tmp_path / "c", [1, 2, 3, 5])
    assert prepare_memory.differences(first, changed) == [
        "data/features.npz", "data/train/part-00000.parquet"
    ]  # fmt: skip
    regrouped = _run(tmp_path / "d", [1, 2, 3, 4], groups=2)
    assert prepare_memory.differences(first, regrouped) == ["data/train/part-00000.parquet"]
    (first / "data" / "valid").mkdir()
    (first / "data" / "valid" / "part-00000.parquet").write_bytes(b"")
    assert prepare_memory.differences(first, _run(tmp_path / "e", [1, 2, 3, 4])) == [
        "only in one: data/valid/part-00000.parquet"
    ]


def test_runs_added_to_a_result_file_keep_its_runs_and_commands_and_need_its_code(tmp_path):
    path = tmp_path / "prepare_memory_x.json"
    assert prepare_memory.earlier_runs(path, "abc1234") == ([], [])
    record = {"command": "python benchmarks/prepare_memory.py --label x",
              "code": {"commit": "abc1234"}, "runs": [{"world": "large"}]}  # fmt: skip
    path.write_text(json.dumps(record))
    assert prepare_memory.earlier_runs(path, "abc1234") == (
        [{"world": "large"}], ["python benchmarks/prepare_memory.py --label x"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="measured at commit abc1234, not def5678"):
        prepare_memory.earlier_runs(path, "def5678")
