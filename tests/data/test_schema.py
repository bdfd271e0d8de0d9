"""The validator catches each kind of bad input and names its table, row and column."""

from __future__ import annotations

import datetime as dt
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prectr.data.schema import Problem, SchemaError, SearchLog, read_log, validate

T0 = dt.datetime(2024, 3, 1, 12, 0)
T1 = dt.datetime(2024, 3, 1, 12, 5)


def valid_log() -> SearchLog:
    """Three items, two requests, five impressions (exposed, unexposed, graded, ungraded)."""
    ms = pa.timestamp("ms")
    return SearchLog(
        items=pa.table(
            {
                "item_id": pa.array([1, 2, 3], pa.int64()),
                "title": ["red mug", "blue mug", "tea pot"],
                "category": ["kitchen", "kitchen", "kitchen"],
                "brand": [None, "acme", "acme"],
                "price": [1.0, None, 2.5],
                "colour": ["red", "blue", None],  # extra columns are kept
            }
        ),
        requests=pa.table(
            {
                "request_id": pa.array([10, 11], pa.int64()),
                "user_id": pa.array([7, 7], pa.int64()),
                "query": ["mug", "tea"],
                "timestamp": pa.array([T0, T1], ms),
            }
        ),
        impressions=pa.table(
            {
                "request_id": pa.array([10, 10, 10, 11, 11], pa.int64()),
                "item_id": pa.array([1, 2, 3, 1, 3], pa.int64()),
                "position": pa.array([1, 2, None, 1, None], pa.int32()),
                "click": pa.array([1, 0, None, 0, None], pa.int8()),
                "relevance": pa.array([3, None, 1, 2, None], pa.int8()),
                "relevance_source": ["human", None, "teacher", "simulator", None],
                "timestamp": pa.array([T0, T0, None, T1, None], ms),
            }
        ),
    )


def replaced(table: pa.Table, name: str, values: list, type: pa.DataType | None = None):
    """``table`` with column ``name`` replaced by ``values`` (of its own type by default)."""
    index = table.column_names.index(name)
    column = pa.array(values, type or table.schema.field(name).type)
    return table.set_column(index, name, column)


def with_row(table: pa.Table, **row) -> pa.Table:
    return pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)])


def edited(**tables: pa.Table) -> SearchLog:
    log = valid_log()
    return SearchLog(**{name: tables.get(name, log.table(name)) for name in log_tables()})


def log_tables() -> tuple[str, ...]:
    return ("items", "requests", "impressions")


def the_problem(log: SearchLog) -> Problem:
    """The single problem of ``log`` (fails if there are none or several)."""
    problems = validate(log)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def assert_names(problem: Problem, table: str, column: str, rows: tuple[int, ...]) -> None:
    assert (problem.table, problem.column, problem.rows) == (table, column, rows)
    text = str(problem)
    assert text.startswith(table)
    assert f"column '{column}'" in text
    if rows:
        assert f"row {rows[0]}" in text or f"rows {rows[0]}" in text


def test_valid_log_has_no_problems():
    assert validate(valid_log()) == []


def test_missing_required_column():
    problem = the_problem(edited(items=valid_log().items.drop_columns(["category"])))
    assert_names(problem, "items", "category", ())
    assert "missing" in problem.message


def test_wrong_dtype():
    items = replaced(valid_log().items, "price", ["1.0", None, "2.5"], pa.string())
    problem = the_problem(edited(items=items))
    assert_names(problem, "items", "price", ())
    assert "dtype string" in problem.message


def test_duplicate_item_id():
    items = with_row(valid_log().items, item_id=2, title="x", category="k")
    problem = the_problem(edited(items=items))
    assert_names(problem, "items", "item_id", (3,))
    assert "duplicate" in problem.message


def test_duplicate_request_id():
    requests = with_row(valid_log().requests, request_id=11, user_id=8, query="q", timestamp=T1)
    assert_names(the_problem(edited(requests=requests)), "requests", "request_id", (2,))


def test_duplicate_request_and_item():
    impressions = with_row(valid_log().impressions, request_id=11, item_id=1)
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "item_id", (5,))
    assert "request_id and item_id" in problem.message


def test_impression_naming_an_unknown_request():
    impressions = with_row(valid_log().impressions, request_id=99, item_id=1, timestamp=T0)
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "request_id", (5,))
    assert "unknown request_id" in problem.message


def test_impression_naming_an_unknown_item():
    impressions = with_row(valid_log().impressions, request_id=11, item_id=99)
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "item_id", (5,))
    assert "unknown item_id" in problem.message


def test_grade_outside_0_to_3():
    impressions = replaced(valid_log().impressions, "relevance", [4, None, 1, 2, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "relevance", (0,))
    assert "0-3" in problem.message


def test_click_on_an_unexposed_candidate():
    impressions = replaced(valid_log().impressions, "click", [1, 0, 1, 0, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "click", (2,))
    assert "unexposed" in problem.message


def test_exposed_row_without_click():
    impressions = replaced(valid_log().impressions, "click", [1, None, None, 0, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "click", (1,))
    assert "without a click" in problem.message


def test_duplicate_position_within_a_request():
    impressions = replaced(valid_log().impressions, "position", [1, 1, None, 1, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "position", (1,))
    assert "same position" in problem.message


def test_position_below_1_is_not_also_a_duplicate():
    # request 11's position -1 must not collide with request 10's last position
    impressions = replaced(valid_log().impressions, "position", [1, 2, None, -1, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "position", (3,))
    assert "below 1" in problem.message


def test_unknown_relevance_source():
    sources = ["human", None, "crowd", "simulator", None]
    impressions = replaced(valid_log().impressions, "relevance_source", sources)
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "relevance_source", (2,))
    assert "unknown source" in problem.message


def test_grade_without_source():
    sources = ["human", None, "teacher", None, None]
    impressions = replaced(valid_log().impressions, "relevance_source", sources)
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "relevance_source", (3,))
    assert "grade without a source" in problem.message


def test_all_null_columns_of_null_type_are_accepted():
    impressions = replaced(valid_log().impressions, "relevance", [None] * 5, pa.null())
    impressions = replaced(impressions, "relevance_source", [None] * 5, pa.null())
    assert validate(edited(impressions=impressions)) == []


def test_impression_logged_before_its_request():
    early = T1 - dt.timedelta(seconds=1)
    impressions = replaced(valid_log().impressions, "timestamp", [T0, T0, None, early, None])
    problem = the_problem(edited(impressions=impressions))
    assert_names(problem, "impressions", "timestamp", (3,))
    assert "before its request" in problem.message


def test_null_request_time_is_reported_once_without_warnings():
    requests = replaced(valid_log().requests, "timestamp", [T0, None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        problem = the_problem(edited(requests=requests))
    assert_names(problem, "requests", "timestamp", (1,))


def test_negative_price():
    items = replaced(valid_log().items, "price", [1.0, -0.5, 2.5])
    problem = the_problem(edited(items=items))
    assert_names(problem, "items", "price", (1,))
    assert "negative" in problem.message


def test_all_problems_are_reported():
    log = valid_log()
    items = replaced(log.items, "price", [-1.0, None, -2.0])
    requests = with_row(log.requests, request_id=10, user_id=7, query="q", timestamp=T0)
    impressions = replaced(log.impressions, "relevance", [9, None, 1, 2, None])
    impressions = replaced(impressions, "click", [1, None, None, 0, None])
    impressions = with_row(impressions, request_id=11, item_id=42)
    problems = validate(edited(items=items, requests=requests, impressions=impressions))
    found = {(p.table, p.column, p.rows) for p in problems}
    assert found == {
        ("items", "price", (0, 2)),
        ("requests", "request_id", (2,)),
        ("impressions", "relevance", (0,)),
        ("impressions", "click", (1,)),
        ("impressions", "item_id", (5,)),
    }
    with pytest.raises(SchemaError) as raised:
        edited(items=items, requests=requests, impressions=impressions).check()
    assert raised.value.problems == problems
    assert "(5 problems)" in str(raised.value)
    assert all(str(p) in str(raised.value) for p in problems)


def test_valid_log_round_trips_through_write_and_read(tmp_path):
    log = valid_log()
    out = log.write(tmp_path / "log")
    assert sorted(p.name for p in out.iterdir()) == [
        "impressions.parquet",
        "items.parquet",
        "requests.parquet",
    ]
    back = read_log(out)
    expected = log.check()
    for name in log_tables():
        assert back.table(name).equals(expected.table(name), check_metadata=False), name
    assert back.items["colour"].to_pylist() == ["red", "blue", None]
    assert back.sources["items"] == [(str(out / "items.parquet"), 3)]


def test_write_of_an_invalid_log_writes_nothing(tmp_path):
    items = replaced(valid_log().items, "price", [1.0, -0.5, 2.5])
    with pytest.raises(SchemaError, match="negative"):
        edited(items=items).write(tmp_path / "log")
    assert list(tmp_path.iterdir()) == []


def test_problem_in_a_split_table_names_the_file_and_its_row(tmp_path):
    log = valid_log()
    root = tmp_path / "log"
    (root / "impressions").mkdir(parents=True)
    pq.write_table(log.items, root / "items.parquet")
    pq.write_table(log.requests, root / "requests.parquet")
    impressions = replaced(log.impressions, "relevance", [3, None, 1, 7, None])
    pq.write_table(impressions.slice(0, 2), root / "impressions" / "part-0.parquet")
    pq.write_table(impressions.slice(2), root / "impressions" / "part-1.parquet")
    with pytest.raises(SchemaError) as raised:
        read_log(root)
    [problem] = raised.value.problems
    part = root / "impressions" / "part-1.parquet"
    assert (problem.table, problem.column, problem.rows) == ("impressions", "relevance", (1,))
    assert str(part) in problem.source
    assert f"impressions ({part}), column 'relevance', row 1: grade outside 0-3" in str(problem)


def string_ids(log: SearchLog) -> SearchLog:
    def cast(table: pa.Table) -> pa.Table:
        for name in ("item_id", "request_id", "user_id"):
            if name in table.column_names:
                strings = [f"id-{v}" for v in table[name].to_pylist()]
                table = replaced(table, name, strings, pa.string())
        return table

    return SearchLog(cast(log.items), cast(log.requests), cast(log.impressions))


@pytest.mark.parametrize("ids", ["int", "string"])
def test_int_and_string_ids_are_both_accepted(ids, tmp_path):
    log = valid_log() if ids == "int" else string_ids(valid_log())
    assert validate(log) == []
    back = read_log(log.write(tmp_path / "log"))
    assert back.impressions["item_id"].type == (pa.int64() if ids == "int" else pa.string())


def test_narrow_and_wide_int_ids_mix():
    log = valid_log()
    requests = replaced(log.requests, "request_id", [10, 11], pa.int32())
    items = replaced(log.items, "item_id", [1, 2, 3], pa.int16())
    assert validate(edited(items=items, requests=requests)) == []


@pytest.mark.parametrize(("owner", "key"), [("items", "item_id"), ("requests", "request_id")])
def test_mixed_id_types_across_tables_are_rejected(owner, key):
    as_strings = string_ids(valid_log()).table(owner)
    problem = the_problem(edited(**{owner: as_strings}))
    assert_names(problem, "impressions", key, ())
    assert f"ids are int64 here but string in {owner}" in problem.message


def test_dictionary_encoded_ids_mix_with_plain_ones():
    log = string_ids(valid_log())
    index = log.impressions.column_names.index("request_id")
    encoded = log.impressions["request_id"].dictionary_encode()
    impressions = log.impressions.set_column(index, "request_id", encoded)
    assert validate(SearchLog(log.items, log.requests, impressions)) == []
