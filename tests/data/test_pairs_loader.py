"""`prectr load pairs` maps a file of human-graded (query, title) pairs, in the formats teams
export them in, into a valid log, losing no judgment and naming the row of any bad one."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from prectr.cli import main
from prectr.data.loaders import LOADERS, load_pairs
from prectr.data.loaders.pairs import PAIRS_TIMESTAMP
from prectr.data.schema import read_log
from tests.test_cli import run_cli

ROWS = [  # query, title, grade on a 3-level scale; the second "007 水杯" pair is judged twice
    ("007 水杯", "不锈钢保温水杯", "2"),
    ("007 水杯", "玻璃杯", "1"),
    ("007 水杯", "不锈钢保温水杯", "1"),
    ("儿童水杯", "玻璃杯", "0"),
    ("儿童水杯", "儿童吸管水杯", "2"),
]


def write(path: Path, rows=ROWS, names=("query", "title", "label")) -> Path:
    """``rows`` in the format ``path``'s suffix names, with ``names`` as the column names."""
    columns = {name: [row[k] for row in rows] for k, name in enumerate(names)}
    if path.suffix in (".json", ".jsonl"):
        lines = [json.dumps(dict(zip(columns, values, strict=True)), ensure_ascii=False)
                 for values in zip(*columns.values(), strict=True)]  # fmt: skip
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.table(columns), path)
    elif path.suffix == ".tsv":  # as spreadsheets export it: no quoting
        path.write_text("\n".join(["\t".join(columns), *("\t".join(map(str, row)) for row in
                                   zip(*columns.values(), strict=True))]) + "\n")  # fmt: skip
    else:
        pacsv.write_csv(pa.table(columns), path)
    return path


def judgments(log) -> list[tuple[int, str, str, int]]:
    """Each impression as (file row, query, title, grade), in file order."""
    requests = dict(zip(log.requests["request_id"].to_pylist(), log.requests["query"].to_pylist(),
                        strict=True))  # fmt: skip
    titles = dict(zip(log.items["item_id"].to_pylist(), log.items["title"].to_pylist(),
                      strict=True))  # fmt: skip
    imp = log.impressions.sort_by("pair_row")
    return [(row, requests[r], titles[i], g) for row, r, i, g in zip(
        imp["pair_row"].to_pylist(), imp["request_id"].to_pylist(), imp["item_id"].to_pylist(),
        imp["relevance"].to_pylist(), strict=True)]  # fmt: skip


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_every_judgment_becomes_a_graded_unexposed_candidate(tmp_path, suffix) -> None:
    log = load_pairs(write(tmp_path / f"pairs{suffix}"), grade_map={0: 0, 1: 2, 2: 3})
    assert judgments(log) == [(0, "007 水杯", "不锈钢保温水杯", 3), (1, "007 水杯", "玻璃杯", 2),
                              (2, "007 水杯", "不锈钢保温水杯", 2), (3, "儿童水杯", "玻璃杯", 0),
                              (4, "儿童水杯", "儿童吸管水杯", 3)]  # fmt: skip
    imp = log.impressions
    assert imp["position"].null_count == imp["click"].null_count == imp.num_rows
    assert set(imp["relevance_source"].to_pylist()) == {"human"}
    assert log.items["title"].to_pylist() == ["不锈钢保温水杯", "玻璃杯", "儿童吸管水杯"]
    assert set(log.requests["timestamp"].to_pylist()) == {PAIRS_TIMESTAMP}


def test_a_pair_judged_twice_goes_to_a_second_request_of_its_query(tmp_path) -> None:
    log = load_pairs(write(tmp_path / "pairs.jsonl"), grade_map={0: 0, 1: 2, 2: 3})
    assert log.requests["query"].to_pylist() == ["007 水杯", "007 水杯", "儿童水杯"]
    assert log.impressions.sort_by("pair_row")["request_id"].to_pylist() == [0, 0, 1, 2, 2]


def test_grades_already_0_to_3_need_no_map_and_others_are_refused_with_a_map_to_try(tmp_path):
    log = load_pairs(write(tmp_path / "pairs.csv"))
    assert log.impressions.sort_by("pair_row")["relevance"].to_pylist() == [2, 1, 1, 0, 2]
    five = write(tmp_path / "stars.csv", [("mug", "red mug", 5), ("mug", "tea", 1)])
    with pytest.raises(ValueError, match=r"stars.csv, column 'grade', row 0: 5 is not a grade "
                       r"0-3 \(the file's grades: \[1, 5\]\).*--grade-map 1:1,5:3"):  # fmt: skip
        load_pairs(five)
    with pytest.raises(ValueError, match=r"stars.csv: row 0: relevance 5 is not in the grade map"):
        load_pairs(five, grade_map={1: 0})


def test_columns_are_renamed_by_role(tmp_path) -> None:
    path = write(tmp_path / "pairs.csv", names=("q", "product", "score"))
    with pytest.raises(ValueError, match=r"missing column\(s\) query \(query\), title \(title\), "
                       r"grade \(grade\) \(found: q, product, score\)"):  # fmt: skip
        load_pairs(path)
    log = load_pairs(path, columns={"query": "q", "title": "product", "grade": "score"})
    assert log.impressions.num_rows == len(ROWS)
    with pytest.raises(ValueError, match="unknown column role"):
        load_pairs(path, columns={"user": "q"})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("mug", "red mug", "2"), ("mug", "tea", "high")],
         r"column 'grade', row 1: 'high' is not an integer grade"),
        ([("mug", "red mug", "2"), ("  ", "tea", "1"), ("", "pot", "1")],
         r"column 'query', rows 1, 2: empty query"),
        ([("mug", "red mug", "2.5")], r"column 'grade', row 0: '2.5' is not an integer grade"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_a_bad_row_is_named(tmp_path, rows, message, suffix) -> None:
    with pytest.raises(ValueError, match=message):
        load_pairs(write(tmp_path / f"pairs{suffix}", rows))


def test_an_unknown_format_or_a_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown format '.xlsx'"):
        load_pairs(tmp_path / "pairs.xlsx")
    with pytest.raises(ValueError, match="no such file"):
        load_pairs(tmp_path / "pairs.csv")


def test_the_command_loads_with_a_grade_map_which_other_loaders_refuse(tmp_path, capsys) -> None:
    path = write(tmp_path / "pairs.jsonl")
    out = tmp_path / "log"
    code, printed = run_cli(["load", "pairs", str(path), "--out", str(out), "--grade-map",
                             "0:0,1:2,2:3"], capsys)  # fmt: skip
    assert code == 0 and "5 impressions" in printed
    assert judgments(read_log(out))[0] == (0, "007 水杯", "不锈钢保温水杯", 3)
    with pytest.raises(ValueError, match=r"takes no option grade_map \(its options: none\)"):
        LOADERS["esci"](path, path, grade_map={0: 0})


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_texts_of_digits_stay_texts(tmp_path, suffix) -> None:
    log = load_pairs(write(tmp_path / f"pairs{suffix}", [("0042", "007", 3), ("0042", "12", 0)]))
    assert log.requests["query"].to_pylist() == ["0042"]
    assert log.items["title"].to_pylist() == ["007", "12"]


def test_the_command_renames_columns(tmp_path, capsys) -> None:
    path = write(tmp_path / "pairs.tsv", names=("q", "product", "score"))
    out = tmp_path / "log"
    code, _ = run_cli(["load", "pairs", str(path), "--out", str(out), "--columns",
                       "query=q, title=product,grade=score"], capsys)  # fmt: skip
    assert code == 0 and read_log(out).impressions.num_rows == len(ROWS)


def test_quotes_commas_and_newlines_in_titles_are_kept_as_written(tmp_path) -> None:
    titles = ["\"best\" phone 6.1''", "mug, red", "tea\npot"]
    log = load_pairs(write(tmp_path / "pairs.csv", [("q", t, 1) for t in titles]))
    assert log.items["title"].to_pylist() == titles
    tsv = tmp_path / "pairs.tsv"  # no quoting in a TSV: a quote is text
    tsv.write_text('query\ttitle\tgrade\nq\t"best" phone\t1\nq\t"open quote\t2\n')
    assert load_pairs(tsv).items["title"].to_pylist() == ['"best" phone', '"open quote']


def test_json_values_of_any_type_read_row_by_row(tmp_path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "mug", "title": 123, "grade": 1}\n\n'
                    '{"query": "mug", "title": "red mug", "grade": "+2"}\n'
                    '{"query": "mug", "title": "tea", "grade": 3.0, "extra": [1]}\n')  # fmt: skip
    log = load_pairs(path)
    assert log.items["title"].to_pylist() == ["123", "red mug", "tea"]
    assert log.impressions["relevance"].to_pylist() == [1, 2, 3]
    path.write_text('{"query": "mug", "grade": 1}\n')
    with pytest.raises(ValueError, match=r"missing column\(s\) title \(title\) \(found: query, "
                       r"grade\)"):  # fmt: skip
        load_pairs(path)
    path.write_text('{"query": "mug", "title": "a", "grade": 1}\n{"query": "mug", "title"\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl, line 2: not JSON"):
        load_pairs(path)
    path.write_text('{"query": "mug", "title": "a", "grade": "1e20"}\n')
    with pytest.raises(ValueError, match=r"row 0: '1e20' is not an integer grade"):
        load_pairs(path)


def test_an_empty_file_or_a_repeated_column_is_refused(tmp_path) -> None:
    empty = tmp_path / "pairs.csv"
    empty.write_text("query,title,grade\n")
    with pytest.raises(ValueError, match="no rows"):
        load_pairs(empty)
    twice = tmp_path / "twice.csv"
    twice.write_text("query,title,grade,title\nq,a,1,b\n")
    with pytest.raises(ValueError, match="title used more than once"):
        load_pairs(twice)


def test_a_bad_flag_is_refused_with_its_reason(tmp_path, capsys) -> None:
    path = write(tmp_path / "pairs.csv")
    refusals = {"--columns": ("grade", "'grade' is not ROLE=NAME"),
                "--grade-map": ("0:9", "maps onto 9, not a grade 0-3")}  # fmt: skip
    for flag, (value, reason) in refusals.items():
        with pytest.raises(SystemExit):
            main(["load", "pairs", str(path), "--out", str(tmp_path / "x"), flag, value])
        assert reason in capsys.readouterr().err


def test_a_byte_order_mark_or_a_blank_line_leaves_every_text_as_written(tmp_path) -> None:
    csv_file = tmp_path / "pairs.csv"  # as spreadsheets export "CSV UTF-8"
    csv_file.write_bytes("\ufeffquery,title,grade\n\n007,1.50,2\n7,x,1\n".encode())
    log = load_pairs(csv_file)
    assert log.requests["query"].to_pylist() == ["007", "7"]
    assert log.items["title"].to_pylist() == ["1.50", "x"]
    json_file = tmp_path / "pairs.jsonl"
    json_file.write_bytes('\ufeff{"query": 7, "title": 1.50, "grade": 2}\n'.encode())
    log = load_pairs(json_file)
    assert (log.requests["query"].to_pylist(), log.items["title"].to_pylist()) == (["7"], ["1.50"])
