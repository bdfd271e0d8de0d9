"""A tiny student, rule-based teacher labels and a fake embedding cache on the tiny world."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prectr.encoder.pairs import LogPairs, log_texts, read_pairs
from prectr.encoder.student import Student, StudentConfig, save_student
from prectr.text.cache import build_embedding_cache
from prectr.text.tokenizer import TextTokenizer

TINY = dict(dim=16, layers=1, heads=2, ff=32, query_length=6, title_length=16)
WORD = re.compile(r"[a-z0-9]+")


def tiny_student(vocab_size: int, mode: str = "cross", **overrides) -> Student:
    torch.manual_seed(0)
    return Student(StudentConfig(vocab_size=vocab_size, mode=mode, **{**TINY, **overrides}))


def fake_embed(texts: list[str]) -> np.ndarray:
    """A deterministic 8-d embedding per text (a hash), standing in for MiniLM."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts]
    return np.stack(rows).astype(np.float32) / 255.0 if rows else np.zeros((0, 8), np.float32)


def overlap_logits(query: str, title: str) -> list[float]:
    """A rule-based teacher: the more query words in the title, the higher the grade."""
    words = set(WORD.findall(query.lower()))
    share = len(words & set(WORD.findall(title.lower()))) / max(len(words), 1)
    return [2.0 - 4 * share, 0.0, 2 * share - 1.0, 4 * share - 2.0]


@pytest.fixture(scope="session")
def pairs(tiny_world: Path) -> LogPairs:
    return read_pairs(tiny_world)


@pytest.fixture(scope="session")
def tokenizer(pairs: LogPairs) -> TextTokenizer:
    return TextTokenizer.train(pairs.queries, pairs.titles, vocab_size=400)


@pytest.fixture(scope="session")
def student_dir(tokenizer: TextTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) tiny cross-encoder student saved with its tokenizer."""
    return save_student(tmp_path_factory.mktemp("student"), tiny_student(tokenizer.vocab_size),
                        tokenizer)  # fmt: skip


@pytest.fixture(scope="session")
def labels_path(pairs: LogPairs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rule-based teacher labels of every training pair, with an 8-d hidden state, plus one
    pair the log does not have."""
    train = pairs.train
    queries = [pairs.queries[i] for i in train["query"].to_numpy()] + ["no such query"]
    titles = [pairs.titles[i] for i in train["title"].to_numpy()] + ["no such title"]
    logits = [overlap_logits(q, t) for q, t in zip(queries, titles, strict=True)]
    hidden = np.random.default_rng(0).normal(size=(len(queries), 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("teacher") / "labels.parquet"
    pq.write_table(pa.table({
        "query": queries, "title": titles,
        "logits": pa.array(logits, pa.list_(pa.float32())),
        "hidden": pa.array(list(hidden), pa.list_(pa.float32())),
    }), path)  # fmt: skip
    return path


@pytest.fixture(scope="session")
def cache_path(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "minilm.parquet"
    return build_embedding_cache(log_texts(tiny_world), fake_embed, path, chunk=1000)
