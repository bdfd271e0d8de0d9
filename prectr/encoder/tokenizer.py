"""The student's subword tokenizer: WordPiece trained on a log's queries and titles.

Trained with the ``tokenizers`` library (lower-casing BERT normaliser and pre-tokeniser), so
typos and unseen words fall back to known pieces instead of one out-of-vocabulary id. Id 0 is
padding, 1 the unknown piece and 2 the separator the cross-encoder puts between query and
title. Texts become fixed-width id matrices, right-padded and truncated to a given length.
The tokenizer is saved as one JSON file beside the student's weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from prectr.io import atomic_file

PAD, UNK, SEP = 0, 1, 2
SPECIAL = ("[PAD]", "[UNK]", "[SEP]")


class TextTokenizer:
    """A trained WordPiece tokenizer turning texts into padded id matrices."""

    def __init__(self, tokenizer: Tokenizer):
        ids = [tokenizer.token_to_id(t) for t in SPECIAL]
        if ids != [PAD, UNK, SEP]:
            raise ValueError(f"tokenizer: special tokens {SPECIAL} must have ids 0, 1, 2; "
                             f"found {ids}")  # fmt: skip
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls, texts: Iterable[str | None], vocab_size: int = 8000, min_frequency: int = 2
    ) -> TextTokenizer:
        """Fit a WordPiece vocabulary of at most ``vocab_size`` pieces on ``texts``."""
        if vocab_size <= len(SPECIAL):
            raise ValueError(f"vocab_size must exceed {len(SPECIAL)}, got {vocab_size}")
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL),
            show_progress=False,
        )  # fmt: skip
        tokenizer.train_from_iterator((t for t in texts if t), trainer)
        # the trainer numbers pieces in hash order (and breaks frequency ties at the cut the
        # same way): number them in sorted order, and keep a trained tokenizer with its model
        pieces = sorted(set(tokenizer.get_vocab()) - set(SPECIAL))
        vocab = {token: i for i, token in enumerate([*SPECIAL, *pieces])}
        tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str | None], length: int) -> np.ndarray:
        """``(n, length)`` int64 piece ids, truncated to ``length``, right-padded with 0."""
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(self.tokenizer.encode_batch([t or "" for t in texts])):
            ids = encoding.ids[:length]
            out[row, : len(ids)] = ids
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(self.tokenizer.to_str())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer file")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises a bare Exception on a bad file
            raise ValueError(f"{path}: not a tokenizers JSON file ({err})") from None
        return cls(tokenizer)
