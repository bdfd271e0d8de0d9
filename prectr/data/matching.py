"""Query and title words, and how a query matches a title: texts as left-padded id matrices of
their lower-case alphanumeric words, the share of a query's words found in a title, and the
match level an impression is shown at.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.data.vocabulary import OOV, Vocabulary

TOKEN = re.compile(r"[a-z0-9]+")
MATCH_LEVELS = 10  # 5 title-match steps x (category match or not)


def ranges(sizes: np.ndarray) -> np.ndarray:
    """0..n-1 for each n in ``sizes``, concatenated."""
    return np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def word_counts(*texts: pa.ChunkedArray | pa.Array) -> Counter[str]:
    """How often each word (lower-case alphanumeric run, as :func:`tokens` cuts them) occurs
    in the texts of the columns: each distinct text split once, weighted by its occurrences
    (a log's queries repeat; no list of every word is built)."""
    counts: Counter[str] = Counter()
    for column in texts:
        distinct = pc.value_counts(column).flatten()
        for text, n in zip(distinct[0].to_pylist(), distinct[1].to_pylist(), strict=True):
            for word in TOKEN.findall((text or "").lower()):
                counts[word] += n
    return counts


def tokens(texts: list[str | None], vocab: Vocabulary | None, length: int) -> np.ndarray:
    """Tokenise texts (lower-case alphanumeric runs) into an ``(n, length)`` id matrix."""
    words = [TOKEN.findall((t or "").lower())[:length] for t in texts]
    out = np.zeros((len(words), length), dtype=np.int32)
    if vocab is None:
        return out
    flat = [w for ws in words for w in ws]
    ids = vocab.lookup(pa.array(flat, pa.string())) if flat else np.zeros(0, np.int32)
    lengths = np.array([len(ws) for ws in words])
    rows = np.repeat(np.arange(len(words)), lengths)
    cols = length - np.repeat(lengths, lengths) + ranges(lengths)  # left padding
    out[rows, cols] = ids
    return out


def match_level(title_match: np.ndarray, category_match: np.ndarray | None) -> np.ndarray:
    """An impression's observed match level as an id: the share of query tokens in the title
    in five steps, and whether the item's category is the query's (ids from 2, 0 = padding)."""
    level = np.rint(title_match * 4).astype(np.int8)
    if category_match is not None:
        level += 5 * category_match.astype(np.int8)
    return level + 2


def token_overlap(
    query: np.ndarray, title: np.ndarray, rows: np.ndarray, items: np.ndarray, chunk: int = 100_000
) -> np.ndarray:
    """Per impression, the share of its query's known tokens found in its item's title (0 when
    the query has none). Computed in chunks so memory stays small."""
    out = np.empty(rows.size, dtype=np.float32)
    for start in range(0, rows.size, chunk):
        q = query[rows[start : start + chunk]]
        t = title[items[start : start + chunk]]
        known = q > OOV
        hit = (q[:, :, None] == t[:, None, :]).any(2) & known
        n = known.sum(1)
        out[start : start + chunk] = np.where(n > 0, hit.sum(1) / np.maximum(n, 1), 0.0)
    return out
