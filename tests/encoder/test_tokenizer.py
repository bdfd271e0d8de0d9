import numpy as np
import pytest

from prectr.encoder.tokenizer import PAD, SEP, UNK, TextTokenizer


def test_training_respects_the_vocabulary_size_and_reserves_the_special_ids() -> None:
    texts = ["red cotton chair", "blue leather sofa", "red leather chairs", "oak table"] * 5
    tokenizer = TextTokenizer.train(texts, vocab_size=60, min_frequency=1)
    assert tokenizer.vocab_size <= 60
    assert [tokenizer.tokenizer.id_to_token(i) for i in (PAD, UNK, SEP)] == [
        "[PAD]", "[UNK]", "[SEP]"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="vocab_size"):
        TextTokenizer.train(texts, vocab_size=3)


def test_encode_truncates_right_pads_and_splits_unseen_words_into_pieces() -> None:
    tokenizer = TextTokenizer.train(["red chair", "red chairs", "blue sofa"] * 4, 80, 1)
    ids = tokenizer.encode(["RED chair", "", None, "red red red red"], length=3)
    assert ids.shape == (4, 3) and ids.dtype == np.int64
    assert (ids[0, :2] > SEP).all() and ids[0, 2] == PAD  # lower-cased, then padding
    assert (ids[1] == PAD).all() and (ids[2] == PAD).all()
    assert (ids[3] == ids[3, 0]).all()  # truncated to 3 pieces
    pieces = tokenizer.tokenizer.encode("sofas").tokens  # never seen whole
    assert "[UNK]" not in pieces and len(pieces) > 1


def test_pieces_are_numbered_in_sorted_order_after_the_specials() -> None:
    texts = [f"{a} {b} chair" for a in ("red", "blue", "oak", "pine") for b in ("tall", "low")]
    vocab = TextTokenizer.train(texts * 3, 60, 1).tokenizer.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    assert pieces[3:] == sorted(pieces[3:])


def test_save_and_load_give_the_same_ids(tmp_path) -> None:
    tokenizer = TextTokenizer.train(["walnut desk", "walnut shelf", "pine desk"] * 3, 60, 1)
    path = tokenizer.save(tmp_path / "tok" / "tokenizer.json")
    again = TextTokenizer.load(path)
    texts = ["walnut desk", "pine shelf x"]
    assert np.array_equal(again.encode(texts, 5), tokenizer.encode(texts, 5))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        TextTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        TextTokenizer.load(tmp_path / "missing.json")
