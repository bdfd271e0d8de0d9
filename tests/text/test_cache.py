import numpy as np
import pytest

from prectr.text.cache import build_embedding_cache, load_embedding_cache
from tests.encoder.conftest import fake_embed


def test_cache_holds_each_distinct_text_once_with_its_embedding(tmp_path) -> None:
    path = build_embedding_cache(["b", "a", "b", "c"], fake_embed, tmp_path / "c.parquet", 2)
    texts, vectors = load_embedding_cache(path)
    assert texts == ["a", "b", "c"] and vectors.shape == (3, 8) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, fake_embed(texts))
    assert not (tmp_path / "c.parquet.parts").exists()


def test_a_killed_build_resumes_without_recomputing_written_chunks(tmp_path) -> None:
    calls: list[list[str]] = []

    def failing(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if "e" in texts:
            raise RuntimeError("killed")
        return fake_embed(texts)

    path = tmp_path / "c.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        build_embedding_cache(list("abcdef"), failing, path, chunk=2)
    assert not path.exists() and calls == [["a", "b"], ["c", "d"], ["e", "f"]]
    calls.clear()
    build_embedding_cache(list("abcdef"), lambda t: calls.append(t) or fake_embed(t), path, 2)
    assert calls == [["e", "f"]]
    assert load_embedding_cache(path)[0] == list("abcdef")


def test_a_bad_embedder_or_file_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="expected"):
        build_embedding_cache(["a"], lambda t: np.zeros(3), tmp_path / "c.parquet")
    with pytest.raises(FileNotFoundError, match="prectr encoder cache"):
        load_embedding_cache(tmp_path / "none.parquet")
