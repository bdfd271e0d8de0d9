"""The (query, title) pairs a log offers the student, and the teacher's labels of them.

A log is split by time as for ranking (:func:`prectr.data.dataset.time_split`), and that one
split is the held-out set of teachers and student alike: every (query, title) pair shown in a
test-day pool is held out, and nothing trains on it (no teacher head, no distillation or SFT
step), even where the pair was also shown on a training day. The training and validation days'
other pairs are what teachers and student learn from (every distinct pair, labelled or not, for
distillation; the rows with a human grade for adaptation and fine-tuning). The test day's pools
are scored against the simulator's ``true_relevance`` (read for evaluation only).

Teacher labels are a parquet file, or a directory of parquet parts (as ``prectr teacher label``
writes them), with one row per distinct pair: ``query`` (string), ``title`` (string), ``logits``
(list of 4 floats, the grade logits) and optionally ``hidden`` (list of floats, one width for
every row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prectr.data.dataset import time_split
from prectr.data.schema import read_log

GRADES = 4


@dataclass
class LogPairs:
    """Pairs as indices into the distinct query and title texts of a log."""

    queries: list[str]
    titles: list[str]
    train: pa.Table  # distinct training pairs (held-out pairs left out): query, title
    labelled: pa.Table  # human-graded rows of the training pairs: query, title, grade
    held_out: pa.Table  # test-day pool rows: request, query, title[, true_grade when simulated]

    def train_texts(self) -> tuple[list[str], list[str]]:
        """The distinct queries and the distinct titles of the training pairs (what a tokenizer
        learns, and chooses its piece limits on)."""
        queries = [self.queries[i] for i in np.unique(self.train["query"].to_numpy())]
        return queries, [self.titles[i] for i in np.unique(self.train["title"].to_numpy())]


def read_pairs(log_dir: str | Path) -> LogPairs:
    """The training pairs, human grades and held-out rows of the log in ``log_dir``."""
    log = read_log(log_dir)
    split = time_split(log.requests)
    requests = log.requests
    is_test = np.zeros(requests.num_rows, dtype=bool)
    is_test[split["test"]] = True
    queries, query_code = _codes(requests["query"])
    titles, title_code = _codes(log.items["title"])
    imp = log.impressions
    request_row = pc.index_in(imp["request_id"], requests["request_id"]).to_numpy(False)
    item_row = pc.index_in(imp["item_id"], log.items["item_id"]).to_numpy(False)
    rows = pa.table({
        "request": request_row.astype(np.int64),
        "query": query_code[request_row],
        "title": title_code[item_row],
        "grade": imp["relevance"].cast(pa.int8()),
        "human": pc.fill_null(pc.equal(imp["relevance_source"], "human"), False),
    })  # fmt: skip
    test = pa.array(is_test[request_row])
    held_out = rows.filter(test).select(["request", "query", "title"])
    if "true_relevance" in imp.column_names:
        truth = imp["true_relevance"].filter(test)
        if truth.null_count:
            raise ValueError(f"{log_dir}: impressions.true_relevance has {truth.null_count} "
                             "nulls on the test day")  # fmt: skip
        held_out = held_out.append_column("true_grade", truth.cast(pa.int8()))
    key = query_code[request_row] * len(titles) + title_code[item_row]
    train_rows = rows.filter(pa.array(~np.isin(key, key[is_test[request_row]])))
    train = train_rows.group_by(["query", "title"]).aggregate([])
    labelled = train_rows.filter(
        pc.and_(train_rows["human"], pc.is_valid(train_rows["grade"]))
    ).select(["query", "title", "grade"])
    return LogPairs(queries, titles, train, labelled, held_out)


def _codes(texts: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """Distinct texts (nulls as "") and each row's index into them."""
    encoded = pc.fill_null(texts, "").combine_chunks().dictionary_encode()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int64)


@dataclass
class TeacherLabels:
    """Teacher targets of training pairs (indices as in :class:`LogPairs`)."""

    query: np.ndarray  # (n,) int64
    title: np.ndarray  # (n,) int64
    logits: np.ndarray  # (n, 4) float32
    hidden: np.ndarray | None  # (n, h) float32
    unmatched: int  # label rows whose pair is not a training pair of the log


def read_teacher_labels(path: str | Path, pairs: LogPairs) -> TeacherLabels:
    """Teacher labels of the log's training pairs; rows of other pairs are counted and left out.
    A malformed file is refused naming the file, the column and the first bad row."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no teacher labels (run `prectr teacher label`)")
    tables = []
    for file in files:
        tables.append(pq.read_table(file))
        _check_labels(tables[-1], file)
    table = pa.concat_tables(tables, promote_options="permissive")
    query_index = pc.index_in(table["query"], pa.array(pairs.queries))
    title_index = pc.index_in(table["title"], pa.array(pairs.titles))
    keyed = pa.table({
        "query": query_index.cast(pa.int64()), "title": title_index.cast(pa.int64()),
        "row": pa.array(np.arange(table.num_rows)),
    }).join(pairs.train, keys=["query", "title"], join_type="inner")  # fmt: skip
    keyed = keyed.sort_by("row")
    if keyed.num_rows == 0:
        raise ValueError(f"{path}: none of its {table.num_rows} (query, title) pairs is a "
                         "training pair of the log")  # fmt: skip
    rows = keyed["row"].to_numpy()
    logits = _matrix(table["logits"], rows)
    hidden = _matrix(table["hidden"], rows) if "hidden" in table.column_names else None
    return TeacherLabels(keyed["query"].to_numpy(), keyed["title"].to_numpy(), logits, hidden,
                         table.num_rows - keyed.num_rows)  # fmt: skip


def _check_labels(table: pa.Table, path: Path) -> None:
    for name in ("query", "title", "logits"):
        if name not in table.column_names:
            raise ValueError(f"{path}: teacher labels lack the column {name!r}")
    for name in ("query", "title"):
        if not pa.types.is_string(table[name].type) and not pa.types.is_large_string(
            table[name].type
        ):
            raise ValueError(f"{path}: column {name!r} must be strings, not {table[name].type}")
        if table[name].null_count:
            row = int(np.flatnonzero(table[name].is_null().to_numpy(False))[0])
            raise ValueError(f"{path}: row {row}: {name} is null")
    widths = {"logits": GRADES}
    if "hidden" in table.column_names:
        widths["hidden"] = None
    for name, width in widths.items():
        column = table[name]
        if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
            raise ValueError(f"{path}: column {name!r} must be a list of floats, not "
                             f"{column.type}")  # fmt: skip
        lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(False)
        expected = width if width is not None else int(lengths[0]) if lengths.size else 0
        bad = np.flatnonzero(lengths != expected)
        if bad.size:
            raise ValueError(f"{path}: row {int(bad[0])}: {name} has {int(lengths[bad[0]])} "
                             f"values, expected {expected}")  # fmt: skip
        values = pc.list_flatten(column).to_numpy(False).astype(np.float32)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0]) // max(expected, 1)
            raise ValueError(f"{path}: row {row}: {name} holds a NaN or infinite value")


def _matrix(column: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
    values = pc.list_flatten(column).to_numpy(False).astype(np.float32)
    return values.reshape(len(column), -1)[rows]
