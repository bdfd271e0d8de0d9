"""The (query, title) pairs of a log, and teacher labels for them: batched, cached, resumable.

A labels directory holds ``meta.json`` (the teacher's fingerprint) and parquet parts, each
written atomically, with one row per distinct pair: ``query``, ``title``, ``logits``
(list<float32> of the 4 grade logits) and, unless left out, ``hidden`` (list<float32>, the
teacher's pooled hidden state). A killed run loses at most the part it was computing; the next
run with the same teacher skips every pair already written.
"""

from __future__ import annotations

import hashlib
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

from prectr.data.schema import read_log
from prectr.encoder.teachers.base import N_GRADES, Teacher
from prectr.io import atomic_file

META_FILE = "meta.json"
SPLITS = ("all", "adapt", "heldout")


def heldout_mask(queries: pa.Array | list[str], share: float = 0.2) -> np.ndarray:
    """Whether each query belongs to the held-out queries: a stable hash of the query text, so
    the split is the same in every log and every run (teacher and student evaluate on it)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"held-out share {share} is not in [0, 1]")
    values = pa.array(queries, type=pa.string()).to_pylist()
    fractions = np.array(
        [
            int.from_bytes(hashlib.blake2b(q.encode(), digest_size=8).digest()) / 2.0**64
            for q in values
        ]
    )
    return fractions < share


def log_pairs(
    log_dir: str | Path,
    split: str = "all",
    heldout_share: float = 0.2,
    human_only: bool = False,
    n_queries: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
    with_truth: bool = False,
) -> pa.Table:
    """One row per distinct (query, title) pair of a log's candidate pools, sorted.

    ``relevance`` is the pair's human grade (the rounded mean of its human judgments; null when
    none). ``split`` keeps the pairs of all queries, of the queries used for adaptation, or of
    the held-out ones; ``n_queries`` keeps that many random queries (all their pairs) and
    ``max_pairs`` then that many random pairs. ``with_truth`` adds the simulator's
    ``true_relevance`` (evaluation only; the highest grade among the pair's impressions).
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    log = read_log(log_dir)
    if with_truth and "true_relevance" not in log.impressions.column_names:
        raise ValueError(f"{log_dir}: impressions have no true_relevance (not a simulated world)")
    columns = ["request_id", "item_id", "relevance", "relevance_source"]
    imp = log.impressions.select(columns + (["true_relevance"] if with_truth else []))
    human = pc.equal(imp["relevance_source"].cast(pa.string()), "human")
    imp = imp.set_column(
        imp.column_names.index("relevance"),
        "relevance",
        pc.if_else(human, imp["relevance"].cast(pa.float64()), None),
    )
    joined = imp.join(log.requests.select(["request_id", "query"]), "request_id")
    joined = joined.join(log.items.select(["item_id", "title"]), "item_id")
    aggregates = [("relevance", "mean")] + ([("true_relevance", "max")] if with_truth else [])
    pairs = joined.group_by(["query", "title"], use_threads=False).aggregate(aggregates)
    pairs = pairs.rename_columns(
        [name.removesuffix("_mean").removesuffix("_max") for name in pairs.column_names]
    )
    pairs = pairs.set_column(
        pairs.column_names.index("relevance"),
        "relevance",
        pc.round(pairs["relevance"]).cast(pa.int8()),
    )
    if human_only:
        pairs = pairs.filter(pc.is_valid(pairs["relevance"]))
    if split != "all":
        mask = heldout_mask(pairs["query"], heldout_share)
        pairs = pairs.filter(mask if split == "heldout" else ~mask)
    pairs = pairs.sort_by([("query", "ascending"), ("title", "ascending")])
    rng = np.random.default_rng(seed)
    if n_queries is not None:
        names = pc.unique(pairs["query"]).to_pylist()
        kept = rng.choice(len(names), size=min(n_queries, len(names)), replace=False)
        pairs = pairs.filter(pc.is_in(pairs["query"], pa.array([names[i] for i in kept])))
    if max_pairs is not None and pairs.num_rows > max_pairs:
        pairs = pairs.take(np.sort(rng.choice(pairs.num_rows, size=max_pairs, replace=False)))
    return pairs


def _float_lists(values: np.ndarray) -> pa.ListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    offsets = np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel()))


def list_column(table: pa.Table, name: str) -> np.ndarray:
    """A list<float32> column of equal-length lists (``logits``, ``hidden``) as an (N, D) array."""
    column = table[name].combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)


def _open_store(out: Path, fingerprint: dict[str, Any], keep_hidden: bool, overwrite: bool) -> None:
    """Create ``out`` for this teacher, or check that its labels came from the same teacher
    and hold the same columns."""
    meta = out / META_FILE
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if meta.is_file():
        found = json.loads(meta.read_text())
        if found["teacher"] != fingerprint:
            raise ValueError(
                f"{out} holds labels of another teacher (see {meta}); pass overwrite or choose "
                "another directory"
            )
        if found["hidden"] != keep_hidden:
            stored = "with" if found["hidden"] else "without"
            raise ValueError(f"{out} holds labels {stored} hidden states; resume it the same way")
        return
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and has no {META_FILE}")
    with atomic_file(meta) as tmp:
        tmp.write_text(json.dumps({"teacher": fingerprint, "hidden": keep_hidden}, indent=2) + "\n")


def _parts(path: Path) -> list[Path]:
    return sorted(path.glob("part-*.parquet"))


def read_labels(path: str | Path) -> pa.Table:
    """All labels of a labels directory as one table (query, title, logits[, hidden])."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a labels directory (no {META_FILE})")
    tables = []
    for part in _parts(path):
        table = pq.read_table(part)
        missing = {"query", "title", "logits"} - set(table.column_names)
        if missing:
            raise ValueError(f"{part}: missing column(s) {', '.join(sorted(missing))}")
        lengths = pc.list_value_length(table["logits"]).to_numpy(zero_copy_only=False)
        if (lengths != N_GRADES).any():
            row = int(np.flatnonzero(lengths != N_GRADES)[0])
            raise ValueError(f"{part}: row {row}: logits has {lengths[row]} values, expected 4")
        tables.append(table)
    if not tables:
        schema = pa.schema([("query", pa.string()), ("title", pa.string()),
                            ("logits", pa.list_(pa.float32()))])  # fmt: skip
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
) -> dict[str, Any]:
    """Label every pair of ``pairs`` (columns query, title) not yet in ``out``; return counts and
    the rate of the pairs computed here. ``reuse`` names a labels directory of an adapted
    teacher's base whose hidden states are reused (only its head then runs on those pairs)."""
    out = Path(out)
    _open_store(out, teacher.fingerprint(), keep_hidden, overwrite)
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
        logits = np.zeros((len(chunk), N_GRADES), dtype=np.float32)
        hidden = np.zeros((len(chunk), teacher.hidden_size), dtype=np.float32)
        if hit.any():
            hidden[hit] = np.stack([known[key] for key, h in zip(chunk, hit, strict=True) if h])
            logits[hit] = teacher.adapt(hidden[hit])
        if not hit.all():
            miss = np.flatnonzero(~hit)
            logits[miss], hidden[miss] = teacher.encode(
                [queries[i] for i in miss], [titles[i] for i in miss]
            )
            computed += miss.size
        columns = {"query": pa.array(queries, pa.string()), "title": pa.array(titles, pa.string()),
                   "logits": _float_lists(logits)}  # fmt: skip
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
