"""The (query, title) pairs of a log, and teacher labels for them: batched, cached, resumable.

A labels directory holds ``meta.json`` (the teacher's fingerprint, and which columns it holds)
and parquet parts, each written atomically, with one row per distinct pair: ``query``,
``title``, ``logits`` (list<float32> of the 4 grade logits) and, unless left out, ``hidden``
(list<float32>, the teacher's pooled hidden state). A store of hidden states only (no
``logits``) is what ``teacher adapt`` keeps of its base teacher: the head reads nothing else,
and a language model then runs only up to the layer it reads. A killed run loses at most the
part it was computing; the next run with the same teacher skips every pair already written.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from prectr.encoder.pairs import PairsConfig, holds_logits, read_pairs
from prectr.encoder.teachers.base import N_GRADES, Teacher
from prectr.io import atomic_file
from prectr.words import count

META_FILE = "meta.json"
SPLITS = ("all", "adapt", "heldout")


def log_pairs(
    log_dir: str | Path,
    split: str = "all",
    human_only: bool = False,
    n_queries: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    held_out: PairsConfig | None = None,
) -> pa.Table:
    """One row per distinct (query, title) pair of a log's candidate pools, sorted.

    ``split`` keeps every pair, the pairs a teacher may learn from (``adapt``: the training
    days' pairs) or the held-out ones (``heldout``: the test day's, never learnt from; see
    :mod:`prectr.encoder.pairs`). ``relevance`` is the pair's human grade on the training days
    (its human judgments merged as :mod:`prectr.encoder.pairs` says; null when none, and
    always for held-out pairs).
    ``n_queries`` keeps that many random queries (all their pairs) and ``max_pairs`` then that
    many random pairs. ``held_out`` chooses the held-out split (default: the last day).
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    pairs = read_pairs(log_dir, held_out)
    keys = []
    if split in ("all", "adapt"):
        keys.append(pairs.train.select(["query", "title"]))
    if split in ("all", "heldout"):
        keys.append(pairs.held_out.group_by(["query", "title"]).aggregate([]))
    table = pa.concat_tables(keys)
    table = table.join(pairs.labelled, ["query", "title"])
    table = pa.table({
        "query": pa.array(pairs.queries).take(table["query"]),
        "title": pa.array(pairs.titles).take(table["title"]),
        "relevance": table["grade"].cast(pa.int8()),
    })  # fmt: skip
    if human_only:
        table = table.filter(pc.is_valid(table["relevance"]))
    table = table.sort_by([("query", "ascending"), ("title", "ascending")])
    rng = np.random.default_rng(seed)
    if n_queries is not None:
        names = pc.unique(table["query"]).to_pylist()
        kept = rng.choice(len(names), size=min(n_queries, len(names)), replace=False)
        table = table.filter(pc.is_in(table["query"], pa.array([names[i] for i in kept])))
    if max_pairs is not None and table.num_rows > max_pairs:
        table = table.take(np.sort(rng.choice(table.num_rows, size=max_pairs, replace=False)))
    return table


def _float_lists(values: np.ndarray) -> pa.ListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    offsets = np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel()))


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A list<float32> column of equal-length lists (``logits``, ``hidden``) as an (N, D) array."""
    column = table[name].combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)


def _open_store(
    out: Path, fingerprint: dict[str, Any], keep_hidden: bool, overwrite: bool, logits: bool = True
) -> bool:
    """Create ``out`` for this teacher, or check that its labels came from the same teacher
    and hold the same hidden states; whether it holds logits: an existing store keeps its
    own way (one with logits also serves where only hidden states are asked for), a new one
    ``logits``'s."""
    meta = out / META_FILE
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if meta.is_file():
        found = json.loads(meta.read_text())
        if found["teacher"] != fingerprint:
            raise ValueError(
                f"{out} holds labels of another teacher (see {meta}); pass --overwrite or choose "
                "another directory"
            )
        if found["hidden"] != keep_hidden:
            stored = "with" if found["hidden"] else "without"
            raise ValueError(f"{out} holds labels {stored} hidden states; resume it the same way")
        if not holds_logits(found) and logits:
            raise ValueError(f"{out} holds hidden states only, no grade logits (what `teacher "
                             "adapt` keeps of its base); label into another directory")  # fmt: skip
        return holds_logits(found)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and has no {META_FILE}")
    with atomic_file(meta) as tmp:
        found = {"teacher": fingerprint, "hidden": keep_hidden, "logits": logits}
        tmp.write_text(json.dumps(found, indent=2) + "\n")
    return logits


def _parts(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


def read_labels(path: str | Path) -> pa.Table:
    """All labels of a labels directory as one table (query, title, logits[, hidden]; a store
    of hidden states only: query, title, hidden)."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a labels directory (no {META_FILE})")
    logits = holds_logits(json.loads((path / META_FILE).read_text()))
    labels = "logits" if logits else "hidden"
    tables = []
    for part in _parts(path):
        table = pq.read_table(part)
        missing = {"query", "title", labels} - set(table.column_names)
        if missing:
            raise ValueError(f"{part}: missing column(s) {', '.join(sorted(missing))}")
        if not logits:
            tables.append(table)
            continue
        lengths = pc.list_value_length(table["logits"]).to_numpy(zero_copy_only=False)
        if (lengths != N_GRADES).any():
            row = int(np.flatnonzero(lengths != N_GRADES)[0])
            raise ValueError(
                f"{part}: row {row}: logits has {count(int(lengths[row]), 'value')}, expected 4"
            )
        tables.append(table)
    if not tables:
        schema = pa.schema([("query", pa.string()), ("title", pa.string()),
                            (labels, pa.list_(pa.float32()))])  # fmt: skip
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="permissive")


def _done_keys(out: Path) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for part in _parts(out):
        table = pq.read_table(part, columns=["query", "title"])
        keys.update(zip(table["query"].to_pylist(), table["title"].to_pylist(), strict=True))
    return keys


def _reused_hidden(teacher: Teacher, reuse: Path | None) -> dict[tuple[str, str], np.ndarray]:
    """Hidden states of an adapted teacher's base, from a labels directory of that base."""
    base = getattr(teacher, "base", None)
    if reuse is None or base is None or not (reuse / META_FILE).is_file():
        return {}
    if json.loads((reuse / META_FILE).read_text())["teacher"] != base.fingerprint():
        return {}
    table = read_labels(reuse)
    if "hidden" not in table.column_names:
        return {}
    keys = zip(table["query"].to_pylist(), table["title"].to_pylist(), strict=True)
    return dict(zip(keys, list_column(table, "hidden"), strict=True))


def label_pairs(
    teacher: Teacher,
    pairs: pa.Table,
    out: str | Path,
    part_size: int = 256,
    keep_hidden: bool = True,
    overwrite: bool = False,
    reuse: str | Path | None = None,
    progress: bool = True,
    logits: bool = True,
) -> dict[str, Any]:
    """Label every pair of ``pairs`` (columns query, title) not yet in ``out``; return counts and
    the rate of the pairs computed here. ``reuse`` names a labels directory of an adapted
    teacher's base whose hidden states are reused (only its head then runs on those pairs).
    Without ``logits``, a new store keeps the hidden states alone (:meth:`Teacher.hidden`); an
    existing one with logits goes on with them."""
    out = Path(out)
    if not (logits or keep_hidden):
        raise ValueError("labels without logits must keep the hidden states")
    logits = _open_store(out, teacher.fingerprint(), keep_hidden, overwrite, logits)
    done = _done_keys(out)
    wanted = dict.fromkeys(zip(pairs["query"].to_pylist(), pairs["title"].to_pylist(), strict=True))
    todo = [key for key in wanted if key not in done]
    known = _reused_hidden(teacher, None if reuse is None else Path(reuse))
    next_part = len(_parts(out))
    started, computed = time.perf_counter(), 0
    bar = tqdm(
        total=len(todo), unit="pair", desc=f"labelling with {teacher.name}", disable=not progress
    )
    for start in range(0, len(todo), part_size):
        chunk = todo[start : start + part_size]
        queries, titles = [q for q, _ in chunk], [t for _, t in chunk]
        hit = np.array([key in known for key in chunk])
        grades = np.zeros((len(chunk), N_GRADES), dtype=np.float32)
        hidden = np.zeros((len(chunk), teacher.hidden_size), dtype=np.float32)
        if hit.any():
            hidden[hit] = np.stack([known[key] for key, h in zip(chunk, hit, strict=True) if h])
            if logits:
                grades[hit] = teacher.adapt(hidden[hit])
        if not hit.all():
            miss = np.flatnonzero(~hit)
            asked = [queries[i] for i in miss], [titles[i] for i in miss]
            if logits:
                grades[miss], hidden[miss] = teacher.encode(*asked)
            else:
                hidden[miss] = teacher.hidden(*asked)
            computed += miss.size
        columns = {"query": pa.array(queries, pa.string()), "title": pa.array(titles, pa.string())}
        if logits:
            columns["logits"] = _float_lists(grades)
        if keep_hidden:
            columns["hidden"] = _float_lists(hidden)
        with atomic_file(out / f"part-{next_part:05d}.parquet") as tmp:
            pq.write_table(pa.table(columns), tmp)
        next_part += 1
        bar.update(len(chunk))
        seconds = time.perf_counter() - started
        bar.set_postfix_str(f"{computed / max(seconds, 1e-9):.1f} teacher pairs/s")
    bar.close()
    seconds = time.perf_counter() - started
    return {
        "pairs": len(wanted),
        "cached": len(wanted) - len(todo),
        "reused": int(sum(key in known for key in todo)),
        "computed": computed,
        "seconds": seconds,
        "pairs_per_s": computed / seconds if computed else None,
    }
