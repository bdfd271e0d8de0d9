"""Grade maps: another scale's values named onto the schema's grades 0-3."""

import pyarrow as pa
import pytest

from prectr.data.grades import format_grade_map, map_grades, parse_grade_map


@pytest.mark.parametrize(("text", "message"), [("0:0,1", "is not FROM:TO"),
                                               ("0:4", "not a grade 0-3"),
                                               ("0:0,0:1", "mapped twice")])  # fmt: skip
def test_a_bad_grade_map_is_refused(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grade_map(text)


def test_a_map_reads_back_as_written_and_maps_keeping_nulls() -> None:
    grade_map = parse_grade_map("2:3,0:0,1:2")
    assert format_grade_map(grade_map) == "0:0,1:2,2:3"
    mapped = map_grades(pa.array([2, None, 0, 1], pa.int64()), grade_map, "file.csv:")
    assert mapped.type == pa.int8() and mapped.to_pylist() == [3, None, 0, 2]
    with pytest.raises(ValueError, match=r"file.csv: row 1: relevance 7 is not in the grade map "
                       r"0:0,1:2,2:3 \(2 rows\)"):  # fmt: skip
        map_grades(pa.array([0, 7, 7]), grade_map, "file.csv:")
    with pytest.raises(ValueError, match="a grade map needs integers"):
        map_grades(pa.array(["1"]), grade_map, "file.csv:")
