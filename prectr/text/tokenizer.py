"""The student's subword tokenizer: byte-fallback BPE trained on a log's queries and titles.

Trained with the ``tokenizers`` library, for text in any language:

* the normaliser is NFKC and lower-casing (no accent stripping, which would delete the vowel
  signs of Indic scripts);
* the pre-tokeniser splits on white space and then into runs of one kind: a run of Han, kana
  or Hangul characters (scripts written without spaces: the run is a phrase or a sentence), a
  run of other letters (a word), a run of digits, one punctuation mark or symbol. Merges never
  cross a run, and a CJK run is not cut into single characters beforehand, so the trainer
  learns each frequent character and the frequent multi-character words in it;
* BPE learns pieces up to :data:`MAX_PIECE` characters; a Latin word is one piece or a few
  subwords (``sofas`` → ``sofa`` ``s``), a Chinese query a few words and characters;
* byte fallback: a character the vocabulary lacks (an unseen script, a rare Han character
  beyond the alphabet kept) becomes its UTF-8 bytes, 256 pieces always in the vocabulary, so no
  text maps to the unknown piece.

Id 0 is padding, 1 the unknown piece (kept for the id layout; byte fallback leaves it unused)
and 2 the separator the cross-encoder puts between query and title, then the 256 byte pieces,
then the learned pieces in sorted order. Texts become fixed-width id matrices, right-padded and
truncated to a given length.

**Piece limits.** Training also chooses how many pieces of a query and of a title the student
keeps: the smallest limit that truncates at most ``max_truncated`` (default 2%) of the distinct
training queries, and of the titles (:func:`piece_limit`). The limits and the shares they
truncate are saved with the tokenizer, as one JSON file beside the student's weights
(``{"format": FORMAT, "query_length", "title_length", "truncated", "tokenizer"}``). A bare
``tokenizers`` file, as saved before the limits existed (a WordPiece tokenizer), still loads,
without limits; anything else is refused by name.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from prectr.io import atomic_file

PAD, UNK, SEP = 0, 1, 2
SPECIAL = ("[PAD]", "[UNK]", "[SEP]")
BYTES = tuple(f"<0x{b:02X}>" for b in range(256))  # the byte-fallback pieces
FORMAT = "prectr-tokenizer/2"
MAX_PIECE = 16  # characters in a learned piece at most
MAX_TRUNCATED = 0.02  # share of training queries (and titles) the chosen limits may truncate
_NO_SPACE = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}ー々"  # scripts written without spaces
RUNS = Regex(
    rf"[{_NO_SPACE}]+|[\p{{L}}\p{{M}}&&[^{_NO_SPACE}]]+|\p{{N}}+|[^\s\p{{L}}\p{{M}}\p{{N}}]"
)


class TextTokenizer:
    """A trained tokenizer turning texts into padded id matrices, with the piece limits chosen
    on its training texts (``None`` for a tokenizer saved before limits existed)."""

    def __init__(
        self, tokenizer: Tokenizer, query_length: int | None = None,
        title_length: int | None = None, truncated: dict[str, float] | None = None,
    ):  # fmt: skip
        ids = [tokenizer.token_to_id(t) for t in SPECIAL]
        if ids != [PAD, UNK, SEP]:
            raise ValueError(f"tokenizer: special tokens {SPECIAL} must have ids 0, 1, 2; "
                             f"found {ids}")  # fmt: skip
        self.tokenizer = tokenizer
        self.query_length, self.title_length = query_length, title_length
        self.truncated = truncated or {}  # "query", "title": share truncated at the limits

    @classmethod
    def train(
        cls, queries: Sequence[str | None], titles: Sequence[str | None], vocab_size: int = 8000,
        min_frequency: int = 2, max_truncated: float = MAX_TRUNCATED,
    ) -> TextTokenizer:  # fmt: skip
        """Fit at most ``vocab_size`` pieces (specials and bytes included) on ``queries`` and
        ``titles``, and choose the piece limits that truncate at most ``max_truncated`` of each.
        At most half of the learned pieces are single characters (the most frequent, ties
        broken by the character); rarer characters fall back to bytes. The same texts give the
        same tokenizer, byte for byte."""
        budget = vocab_size - len(SPECIAL) - len(BYTES)
        if budget < 1:
            raise ValueError(f"vocab_size must exceed {len(SPECIAL) + len(BYTES)} (the special "
                             f"and byte pieces), got {vocab_size}")  # fmt: skip
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", byte_fallback=True))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(RUNS, "isolated")]
        )
        distinct = dict.fromkeys(t for t in [*queries, *titles] if t)  # a text counts once
        alphabet = _alphabet(tokenizer.normalizer, distinct, max(budget // 2, 1))
        trainer = trainers.BpeTrainer(
            vocab_size=budget + len(SPECIAL), min_frequency=min_frequency,
            special_tokens=list(SPECIAL), initial_alphabet=alphabet,
            limit_alphabet=len(alphabet), max_token_length=MAX_PIECE, show_progress=False,
        )  # fmt: skip
        tokenizer.train_from_iterator(distinct, trainer)
        # the trainer numbers pieces in hash order: number them in sorted order after the
        # specials and bytes, and keep a trained tokenizer with its model
        merges = [tuple(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]
        pieces = sorted(set(tokenizer.get_vocab()) - set(SPECIAL) - set(BYTES))
        vocab = {token: i for i, token in enumerate([*SPECIAL, *BYTES, *pieces])}
        tokenizer.model = models.BPE(vocab, merges, unk_token="[UNK]", byte_fallback=True)
        out = cls(tokenizer)
        out.choose_limits(queries, titles, max_truncated)
        return out

    def choose_limits(
        self, queries: Sequence[str | None], titles: Sequence[str | None],
        max_truncated: float = MAX_TRUNCATED,
    ) -> None:  # fmt: skip
        """Set the piece limits to the smallest that truncate at most ``max_truncated`` of
        ``queries``, and of ``titles`` (see :func:`piece_limit`)."""
        self.query_length, query_share = piece_limit(self.piece_counts(queries), max_truncated)
        self.title_length, title_share = piece_limit(self.piece_counts(titles), max_truncated)
        self.truncated = {"query": query_share, "title": title_share}

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def piece_counts(self, texts: Iterable[str | None]) -> np.ndarray:
        """The number of pieces of each text (0 for an empty or missing one)."""
        encodings = self.tokenizer.encode_batch([t or "" for t in texts])
        return np.array([len(e.ids) for e in encodings], dtype=np.int64)

    def truncated_share(self, texts: Iterable[str | None], length: int) -> float:
        """The share of ``texts`` with more than ``length`` pieces."""
        return float(np.mean(self.piece_counts(texts) > length))

    def encode(self, texts: Sequence[str | None], length: int) -> np.ndarray:
        """``(n, length)`` int64 piece ids, truncated to ``length``, right-padded with 0."""
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(self.tokenizer.encode_batch([t or "" for t in texts])):
            ids = encoding.ids[:length]
            out[row, : len(ids)] = ids
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        state = {
            "format": FORMAT, "query_length": self.query_length,
            "title_length": self.title_length, "truncated": self.truncated,
            "tokenizer": json.loads(self.tokenizer.to_str()),
        }  # fmt: skip
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(state, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer file")
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a tokenizer JSON file ({err})") from None
        if not isinstance(state, dict) or state.get("format", FORMAT) != FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{path}: tokenizer format {found!r} is not {FORMAT!r}; train "
                             "it again with `prectr encoder tokenizer`")  # fmt: skip
        legacy = "format" not in state  # a bare tokenizers file, saved before the limits
        try:
            tokenizer = Tokenizer.from_str(json.dumps(state if legacy else state["tokenizer"]))
        except Exception as err:  # the Rust side raises a bare Exception on a bad file
            raise ValueError(f"{path}: not a tokenizers JSON file ({err})") from None
        if legacy:
            return cls(tokenizer)
        return cls(tokenizer, state["query_length"], state["title_length"], state["truncated"])


def _alphabet(normalizer: normalizers.Normalizer, texts: Iterable[str], limit: int) -> list[str]:
    """The ``limit`` most frequent characters of the normalised ``texts`` (white space aside),
    ties broken by the character. The BPE trainer, asked to keep a limited alphabet itself,
    breaks ties in its hash maps' order, which changes from one run to the next, so the same log
    gave different tokenizers (huggingface/tokenizers#1794); handed exactly these characters as
    its initial alphabet, it keeps them and no other, and its merges follow deterministically."""
    counts = Counter(c for t in texts for c in normalizer.normalize_str(t) if not _space(c))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [c for c, _ in ranked[:limit]]


def _space(char: str) -> bool:
    """Whether the pre-tokeniser splits on ``char`` (Rust's ``char::is_whitespace``: Python's
    ``isspace`` less the four information separators U+001C to U+001F)."""
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


def piece_limit(counts: np.ndarray, max_truncated: float = MAX_TRUNCATED) -> tuple[int, float]:
    """The smallest piece limit (at least 1) that truncates at most ``max_truncated`` of the
    texts with ``counts`` pieces, and the share it truncates."""
    if counts.size == 0:
        raise ValueError("no texts to choose a piece limit from")
    if not 0 <= max_truncated < 1:
        raise ValueError(f"max_truncated must be in [0, 1), got {max_truncated}")
    kept = counts.size - 1 - math.floor(max_truncated * counts.size)  # the longest kept whole
    limit = max(int(np.sort(counts)[kept]), 1)
    return limit, float(np.mean(counts > limit))
