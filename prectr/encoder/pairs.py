"""The (query, title) pairs a log offers the student, and the teacher's labels of them.

One split of the log's requests is the held-out set of teachers and student alike; ``held_out``
(a :class:`PairsConfig` field, ``--held-out`` on the command line) chooses it:

``day``
    the last day, as for ranking (:func:`prectr.data.shards.time_split`: the log must span at
    least 3 days, the day before the last being validation, which the encoder trains on);
``query`` or ``query:F``
    the requests whose query text hashes (BLAKE2b, so the same in every run and on every
    machine) below ``F`` (default :data:`QUERY_FRACTION`): a deterministic share of the distinct
    queries, which works on a graded set whose requests share one timestamp (``prectr load
    esci``);
a log directory
    every request of that other log (e.g. ESCI's test split loaded apart); the whole log named
    first then trains.

Every (query, title) pair shown in a held-out pool is held out, and nothing trains on it (no
teacher head, no distillation or SFT step), even where the pair was also shown in a training
request: such pairs are dropped from training and counted (:attr:`LogPairs.counts`). The other
pairs are what teachers and student learn from (every distinct pair, labelled or not, for
distillation; the pairs with a human grade for adaptation and fine-tuning).

Held-out rows are scored against the simulator's ``true_relevance`` (read for evaluation only)
where the held-out rows have that column, and otherwise against the human grades
(``relevance`` where ``relevance_source`` is ``human``); held-out rows without a grade are not
scored.

**Duplicates.** A (query, title) pair graded more than once on one side of the split gets one
grade, the mean of its human grades rounded to the nearest grade the log's scale has (the
grade map's grades where one is given, else every grade its human-graded rows hold, on either
side of the split), halves rounded down (grades 1 and 2 give 1; 1, 2 and 3 give 2;
on a 3-level scale mapped onto 0, 2 and 3, grades 0 and 3 give 2, never the 1 it lacks).
Training pairs carry it once, with the number of graded rows merged into it (``rows``: SFT can
draw pairs in proportion to it, as the log shows them); every held-out row of the pair is
scored against it. Pairs whose grades disagree are counted.

**Other grade scales.** ``grade_map`` maps each ``relevance`` value of the log onto a grade 0-3
(e.g. ``{0: 0, 1: 2, 2: 3}`` for a 3-level set, ``--grade-map 0:0,1:2,2:3``) before the log is
validated; a value the map does not name is refused with its row.

Teacher labels are a parquet file, or a directory of parquet parts (as ``prectr teacher label``
writes them), with one row per distinct pair: ``query`` (string), ``title`` (string), ``logits``
(list of 4 floats, the grade logits) and optionally ``hidden`` (list of floats, one width for
every row).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prectr.data.grades import format_grade_map, map_grades
from prectr.data.schema import SearchLog, read_log
from prectr.data.shards import time_split

GRADES = 4
QUERY_FRACTION = 0.2
TRUTH_COLUMN = "true_relevance"


@dataclass(frozen=True)
class PairsConfig:
    """Which requests are held out (see the module docstring) and how the log's grades map
    onto 0-3 (``None``: they are 0-3 already)."""

    held_out: str = "day"
    grade_map: dict[int, int] | None = None

    def settings(self) -> dict[str, str | None]:
        """The config as JSON-safe settings (a run's ``config.json``)."""
        grade_map = self.grade_map
        text = format_grade_map(grade_map) if grade_map else None
        return {"held_out": self.held_out, "grade_map": text}

    def describe(self) -> str:
        """The held-out split in words."""
        kind, fraction = _held_out_kind(self.held_out)
        if kind == "day":
            return "the last day"
        if kind == "query":
            return f"the queries hashed into a {fraction:.0%} share"
        return f"the log {self.held_out}"


def _held_out_kind(spec: str) -> tuple[str, float]:
    """``("day" | "query" | "log", query fraction)`` of a ``held_out`` setting."""
    if spec == "day":
        return "day", 0.0
    if spec == "query" or spec.startswith("query:"):
        text = spec.partition(":")[2] or str(QUERY_FRACTION)
        try:
            fraction = float(text)
        except ValueError:
            fraction = -1.0
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"held-out split {spec!r}: the query share must be in (0, 1)")
        return "query", fraction
    if not Path(spec).is_dir():
        raise ValueError(f"held-out split {spec!r}: expected day, query[:SHARE] or a log "
                         "directory")  # fmt: skip
    return "log", 0.0


@dataclass
class LogPairs:
    """Pairs as indices into the distinct query and title texts of a log."""

    queries: list[str]
    titles: list[str]
    train: pa.Table  # distinct training pairs (held-out pairs left out): query, title
    # distinct human-graded training pairs: query, title, grade (merged), rows (graded rows of
    # the pair: how often the log shows, and grades, it)
    labelled: pa.Table
    held_out: pa.Table  # held-out pool rows: request, query, title, grade (null: not scored)
    truth: str = "relevance"  # what held-out grades are: true_relevance or human relevance
    counts: dict[str, int] = field(default_factory=dict)  # see read_pairs

    def train_texts(self) -> tuple[list[str], list[str]]:
        """The distinct queries and the distinct titles of the training pairs (what a tokenizer
        learns, and chooses its piece limits on)."""
        queries = [self.queries[i] for i in np.unique(self.train["query"].to_numpy())]
        return queries, [self.titles[i] for i in np.unique(self.train["title"].to_numpy())]


def read_pairs(log_dir: str | Path, config: PairsConfig | None = None) -> LogPairs:
    """The training pairs, human grades and held-out rows of the log in ``log_dir``.

    ``counts`` holds ``overlap_dropped`` (distinct pairs shown in training and held-out requests,
    left out of training), ``conflicting_train`` and ``conflicting_held_out`` (distinct pairs
    whose human grades disagree, merged by the rule of the module docstring) and
    ``held_out_unscored`` (held-out rows without a grade).
    """
    config = config or PairsConfig()
    kind, fraction = _held_out_kind(config.held_out)
    log = _read(log_dir, config.grade_map)
    rows = _pool_rows(log)
    if kind == "day":
        is_test = np.zeros(log.requests.num_rows, dtype=bool)
        try:
            is_test[time_split(log.requests)["test"]] = True
        except ValueError as err:
            raise ValueError(f"{log_dir}: {err}; hold out a hashed share of the queries instead "
                             "(--held-out query)") from None  # fmt: skip
        held = is_test[rows["request"].to_numpy()]
    elif kind == "query":
        held = _query_hash(rows["query"]) < fraction
    else:
        other = _pool_rows(_read(config.held_out, config.grade_map))
        other = other.set_column(0, "request",
                                 pc.add(other["request"], log.requests.num_rows))  # fmt: skip
        rows = pa.concat_tables([rows, other], promote_options="permissive")
        held = np.r_[np.zeros(rows.num_rows - other.num_rows, bool), np.ones(other.num_rows, bool)]
    if not held.any():
        raise ValueError(f"{log_dir}: the held-out split ({config.describe()}) holds no request")
    queries, query_code = _codes(rows["query"])
    titles, title_code = _codes(rows["title"])
    key = query_code * len(titles) + title_code
    held_keys = np.unique(key[held])
    in_held = np.isin(key, held_keys)
    counts = {"overlap_dropped": int(np.unique(key[~held & in_held]).size)}
    human = pc.fill_null(pc.equal(rows["relevance_source"], "human"), False).to_numpy(False)
    grade = rows["relevance"].to_numpy(False)
    graded = human & ~np.isnan(grade.astype(np.float64))
    train = ~in_held
    scale = (np.unique(list(config.grade_map.values())) if config.grade_map
             else np.unique(grade[graded]))  # fmt: skip
    merged, conflicting, graded_rows = _merged_grades(
        key[train & graded], grade[train & graded], scale
    )
    counts["conflicting_train"] = conflicting
    train_keys = np.unique(key[train])
    labelled_keys = np.unique(key[train & graded])
    labelled = pa.table({
        "query": labelled_keys // len(titles), "title": labelled_keys % len(titles),
        "grade": pa.array(merged, pa.int8()), "rows": pa.array(graded_rows, pa.int64()),
    })  # fmt: skip
    simulated = TRUTH_COLUMN in rows.column_names and bool(
        pc.any(pc.is_valid(rows[TRUTH_COLUMN].filter(pa.array(held)))).as_py()
    )
    truth = TRUTH_COLUMN if simulated else "relevance"
    if simulated:
        held_grade = rows[TRUTH_COLUMN].filter(pa.array(held)).cast(pa.int8())
        counts["conflicting_held_out"] = 0
    else:
        scored = held & graded
        merged, conflicting, _ = _merged_grades(key[scored], grade[scored], scale)
        counts["conflicting_held_out"] = conflicting
        index = np.searchsorted(np.unique(key[scored]), key[held])
        has = scored[held]
        values = np.zeros(int(held.sum()), np.int8)
        values[has] = merged[index[has]]
        held_grade = pa.array(values, pa.int8(), mask=~has)
    counts["held_out_unscored"] = int(held_grade.null_count)
    held_out = pa.table({
        "request": rows["request"].filter(pa.array(held)),
        "query": query_code[held], "title": title_code[held], "grade": held_grade,
    })  # fmt: skip
    train_table = pa.table({"query": train_keys // len(titles), "title": train_keys % len(titles)})
    return LogPairs(queries, titles, train_table, labelled, held_out, truth, counts)


def _read(log_dir: str | Path, grade_map: dict[int, int] | None) -> SearchLog:
    """The log, its ``relevance`` mapped onto 0-3 by ``grade_map`` before validation."""
    if grade_map is None:
        return read_log(log_dir)
    log = read_log(log_dir, validate_log=False)
    mapped = map_grades(log.impressions["relevance"], grade_map, f"{log_dir}: impressions")
    column = log.impressions.column_names.index("relevance")
    log.impressions = log.impressions.set_column(column, "relevance", mapped)
    return log.check()


def _pool_rows(log: SearchLog) -> pa.Table:
    """One row per impression: its request's row, query and title texts, human grade and
    source (and the simulator's true grade where the log has it)."""
    imp, requests = log.impressions, log.requests
    request_row = pc.index_in(imp["request_id"], requests["request_id"]).to_numpy(False)
    item_row = pc.index_in(imp["item_id"], log.items["item_id"]).to_numpy(False)
    columns = {
        "request": pa.array(request_row.astype(np.int64)),
        "query": requests["query"].take(request_row), "title": log.items["title"].take(item_row),
        "relevance": imp["relevance"].cast(pa.int8()),
        "relevance_source": imp["relevance_source"].cast(pa.string()),
    }  # fmt: skip
    if TRUTH_COLUMN in imp.column_names:
        columns[TRUTH_COLUMN] = imp[TRUTH_COLUMN].cast(pa.int8())
    return pa.table(columns)


def hash_share(text: str) -> float:
    """A stable position in [0, 1) for ``text`` (BLAKE2b: the same in every process and run).
    The held-out query split takes the bottom of the range and validation the top
    (:func:`validation_queries`), so the two never meet."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


VALIDATION_SPLIT = "query hash top"
"""The validation split of :func:`validation_queries`, recorded by the teacher's training runs so
that a run started under an earlier split (random queries or pairs) does not resume onto it."""


def validation_queries(queries: Sequence[str], share: float) -> np.ndarray:
    """Which of ``queries`` validate at ``share``: those in the top ``share`` of the hash
    range (:func:`hash_share`), each query's pairs all on one side. Every step that trains on
    human grades validates this way (the student's SFT, a teacher's head or fine-tuning), so a
    teacher adapted at a share at least the student's never trains on a grade the student's
    validation reads: distilling it cannot leak those grades into the student's choice. That
    holds while the student's share is at most the teacher's (10% and 15% by default)."""
    return _query_hash(pa.chunked_array([pa.array(list(queries), pa.string())])) >= 1 - share


def _query_hash(queries: pa.ChunkedArray) -> np.ndarray:
    """Each row's query text hashed into [0, 1) by :func:`hash_share`."""
    texts, code = _codes(queries)
    return np.asarray([hash_share(t) for t in texts])[code]


def _merged_grades(
    key: np.ndarray, grade: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """One grade per distinct key (in sorted key order): the mean of its grades rounded to the
    nearest grade of ``scale`` (sorted), halves down; how many keys had disagreeing grades; and
    each key's number of grades (the graded rows merged into it)."""
    distinct, inverse = np.unique(key, return_inverse=True)
    grade = grade.astype(np.float64)
    n = np.bincount(inverse, minlength=distinct.size)
    mean = np.bincount(inverse, weights=grade, minlength=distinct.size) / np.maximum(n, 1)
    low = np.full(distinct.size, np.inf)
    np.minimum.at(low, inverse, grade)
    high = np.full(distinct.size, -np.inf)
    np.maximum.at(high, inverse, grade)
    if not distinct.size:
        return np.zeros(0, np.int8), 0, n
    nearest = np.abs(mean[:, None] - scale[None, :].astype(np.float64)).argmin(1)  # first: lower
    return scale[nearest].astype(np.int8), int((high > low).sum()), n


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


def holds_logits(meta: dict[str, Any]) -> bool:
    """Whether a labels directory whose ``meta.json`` holds ``meta`` holds grade logits, not
    hidden states alone (what ``teacher adapt`` keeps of its base); stores written before
    hidden-only ones all hold them."""
    return meta.get("logits", True)


def read_teacher_labels(path: str | Path, pairs: LogPairs) -> TeacherLabels:
    """Teacher labels of the log's training pairs; rows of other pairs are counted and left out.
    A malformed file is refused naming the file, the column and the first bad row."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"{path}: no teacher labels (run `prectr teacher label`)")
    meta = path / "meta.json"  # what `prectr teacher label` writes beside its parts
    if meta.is_file() and not holds_logits(json.loads(meta.read_text())):
        raise ValueError(f"{path} holds a teacher's hidden states only, no grade logits (what "
                         "`prectr teacher adapt` keeps of its base teacher): label the pairs "
                         "with `prectr teacher label` and pass its --out")  # fmt: skip
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


def log_texts(log_dir: str | Path) -> list[str]:
    """Every distinct query and item title of a log, sorted (what an embedding cache holds:
    :func:`prectr.text.cache.build_embedding_cache`)."""
    log = read_log(log_dir)
    texts = pa.chunked_array([log.requests["query"], log.items["title"]])
    return sorted(pc.unique(pc.drop_null(texts)).to_pylist())
