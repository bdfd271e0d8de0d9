"""Text embeddings of a frozen encoder (PRECTR's MiniLM), computed once and cached by text.

A frozen encoder gives every query and title the same vector whatever the batch, so there is no
reason to run it while training: :func:`build_embedding_cache` embeds each distinct text of a
log (:func:`prectr.encoder.pairs.log_texts`) once, with any ``embed(texts) -> (n, d) float32``
callable (the teacher's ``MiniLM().embed``), and writes a parquet file of ``text`` and
``embedding``. It works in chunks, each written atomically, so a killed build resumes at the
first missing chunk. Features then map each query and title to its row
(:class:`prectr.data.features.FeatureEncoder`), and the model reads the rows as a frozen table
(:class:`prectr.modules.text.CachedText`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from prectr.io import atomic_file
from prectr.words import count

Embed = Callable[[list[str]], np.ndarray]


def build_embedding_cache(
    texts: Iterable[str], embed: Embed, path: str | Path, chunk: int = 4096, batch_size: int = 256
) -> Path:
    """Embed the distinct ``texts`` with ``embed`` and write the cache to ``path``; chunks
    already written beside it (``PATH.parts/``) are reused, not recomputed."""
    path = Path(path)
    distinct = sorted(set(texts))
    parts = path.with_name(path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    tables = []
    with tqdm(total=len(distinct), desc="embedding", unit="text", disable=None) as bar:
        for index, start in enumerate(range(0, len(distinct), chunk)):
            part = parts / f"{index:05d}.parquet"
            block = distinct[start : start + chunk]
            if not part.is_file():
                vectors = np.concatenate([
                    _checked(embed(block[i : i + batch_size]), len(block[i : i + batch_size]))
                    for i in range(0, len(block), batch_size)
                ])  # fmt: skip
                with atomic_file(part) as tmp:
                    pq.write_table(_table(block, vectors), tmp)
            table = pq.read_table(part)
            if table["text"].to_pylist() != block:
                raise ValueError(f"{part}: holds other texts than this log's; remove {parts}")
            tables.append(table)
            bar.update(len(block))
    with atomic_file(path) as tmp:
        pq.write_table(pa.concat_tables(tables) if tables else _table([], np.zeros((0, 0))), tmp)
    for part in parts.iterdir():
        part.unlink()
    parts.rmdir()
    return path


def _checked(vectors: np.ndarray, n: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(
            f"embed returned shape {vectors.shape} for {count(n, 'text')}; expected (n, d)"
        )
    return vectors


def _table(texts: list[str], vectors: np.ndarray) -> pa.Table:
    width = vectors.shape[1] if vectors.ndim == 2 else 0
    flat = pa.array(vectors.astype(np.float32).ravel())
    return pa.table({"text": pa.array(texts, pa.string()),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, width)})  # fmt: skip


def load_embedding_cache(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The cached texts and their ``(n, d)`` float32 embeddings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no embedding cache (run `prectr encoder cache`)")
    table = pq.read_table(path)
    for name in ("text", "embedding"):
        if name not in table.column_names:
            raise ValueError(f"{path}: embedding cache lacks the column {name!r}")
    column = table["embedding"].combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"{path}: column 'embedding' must be a fixed-size list of floats")
    width = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return table["text"].to_pylist(), vectors.reshape(table.num_rows, width)
