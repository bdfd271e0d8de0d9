import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from prectr.text.tokenizer import BYTES, PAD, SEP, UNK, TextTokenizer, piece_limit

FURNITURE = ["red cotton chair", "blue leather sofa", "red leather chairs", "oak table"] * 5
# queries written without spaces: a modifier, then a product ("red sofa", "oak chair", ...)
CHINESE = [a + b for a in ("红色", "蓝色", "真皮", "实木", "白色")
           for b in ("沙发", "椅子", "餐桌")]  # fmt: skip
JAPANESE = [a + b for a in ("赤い", "青い", "白い", "木製の")
            for b in ("ソファ", "椅子", "テーブル")]  # fmt: skip


def test_training_respects_the_vocabulary_size_and_reserves_the_special_and_byte_ids() -> None:
    tokenizer = TextTokenizer.train(FURNITURE, FURNITURE, vocab_size=280, min_frequency=1)
    assert tokenizer.vocab_size <= 280
    vocab = tokenizer.tokenizer.get_vocab()
    assert [tokenizer.tokenizer.id_to_token(i) for i in (PAD, UNK, SEP)] == [
        "[PAD]", "[UNK]", "[SEP]"
    ]  # fmt: skip
    assert [vocab[b] for b in BYTES] == list(range(3, 259))
    with pytest.raises(ValueError, match="vocab_size"):
        TextTokenizer.train(FURNITURE, FURNITURE, vocab_size=259)


def test_latin_text_becomes_words_and_subwords_lower_cased_and_padded() -> None:
    queries = ["red chair", "red chairs", "blue sofa"] * 4
    tokenizer = TextTokenizer.train(queries, queries, 400, 1)
    ids = tokenizer.encode(["RED chair", "", None, "red red red red"], length=3)
    assert ids.shape == (4, 3) and ids.dtype == np.int64
    assert (ids[0, :2] > SEP).all() and ids[0, 2] == PAD  # lower-cased, then padding
    assert (ids[1] == PAD).all() and (ids[2] == PAD).all()
    assert (ids[3] == ids[3, 0]).all()  # truncated to 3 pieces
    assert tokenizer.tokenizer.encode("Red Chairs").tokens == ["red", "chairs"]
    assert tokenizer.tokenizer.encode("sofas").tokens == ["sofa", "s"]  # never seen whole


@pytest.mark.parametrize(
    ("texts", "words"), [(CHINESE, {"沙发", "椅子"}), (JAPANESE, {"ソファ", "椅子"})],
    ids=["chinese", "japanese"],
)  # fmt: skip
def test_cjk_text_gets_multi_character_pieces_and_no_unknown(texts, words) -> None:
    tokenizer = TextTokenizer.train(texts, texts, 300, 2)
    assert words <= set(tokenizer.tokenizer.get_vocab())  # the frequent words are pieces
    for text in texts:
        encoding = tokenizer.tokenizer.encode(text)
        assert UNK not in encoding.ids
        assert "".join(encoding.tokens) == text  # no character lost or cut into bytes
        assert max(len(t) for t in encoding.tokens) > 1


def test_an_unseen_script_falls_back_to_its_utf8_bytes() -> None:
    tokenizer = TextTokenizer.train(FURNITURE + CHINESE, FURNITURE + CHINESE, 400, 1)
    for text in ("Ελληνικά", "हिन्दी", "ไทย", "€"):  # Greek, Devanagari, Thai, a symbol
        encoding = tokenizer.tokenizer.encode(text)
        assert UNK not in encoding.ids
        assert encoding.tokens == [f"<0x{b:02X}>" for b in text.lower().encode()]
    mixed = tokenizer.tokenizer.encode("red 沙发 €").tokens
    assert mixed[:2] == ["red", "沙发"] and mixed[2:] == ["<0xE2>", "<0x82>", "<0xAC>"]


def test_chosen_piece_limits_truncate_at_most_the_allowed_share() -> None:
    rng = np.random.default_rng(0)
    words = ["oak", "table", "round", "walnut", "chair", "灰色", "布艺", "沙发", "sofa", "lamp"]
    queries = [" ".join(rng.choice(words, rng.geometric(0.35))) for _ in range(500)]
    titles = [" ".join(rng.choice(words, 3 + rng.geometric(0.1))) for _ in range(500)]
    tokenizer = TextTokenizer.train(queries, titles, 400)
    for texts, length, side in ((queries, tokenizer.query_length, "query"),
                                (titles, tokenizer.title_length, "title")):  # fmt: skip
        share = tokenizer.truncated_share(texts, length)
        assert share <= 0.02 and share == tokenizer.truncated[side]
        assert tokenizer.truncated_share(texts, length - 1) > 0.02  # the smallest such limit
    assert tokenizer.title_length > tokenizer.query_length
    loose = TextTokenizer.train(queries, titles, 400, max_truncated=0.2)
    assert loose.query_length < tokenizer.query_length


def test_piece_limit_takes_the_smallest_limit_within_the_share() -> None:
    counts = np.array([1, 2, 2, 3, 3, 3, 4, 5, 9, 40])
    assert piece_limit(counts, 0.1) == (9, 0.1)
    assert piece_limit(counts, 0.0) == (40, 0.0)
    assert piece_limit(np.zeros(4, np.int64), 0.02) == (1, 0.0)  # at least one piece
    with pytest.raises(ValueError, match="no texts"):
        piece_limit(np.array([], np.int64))
    with pytest.raises(ValueError, match="max_truncated"):
        piece_limit(counts, 1.0)


def test_pieces_are_numbered_in_sorted_order_after_the_specials_and_bytes() -> None:
    texts = [f"{a} {b} chair" for a in ("red", "blue", "oak", "pine") for b in ("tall", "low")]
    vocab = TextTokenizer.train(texts * 3, texts, 300, 1).tokenizer.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    assert pieces[259:] == sorted(pieces[259:])


def test_the_same_texts_give_the_same_tokenizer_when_the_alphabet_limit_cuts_through_ties(
    tmp_path,
) -> None:
    # 200 Han characters seen equally often, four more seen often, and room for 20 in all (16
    # of the tied): the trainer left to cut the alphabet itself picks among the ties in hash
    # order, a different set every run
    han = [chr(0x4E00 + i) for i in range(200)]
    queries = [han[i] + han[(7 * i + 3) % 200] for i in range(200)]
    titles = [
        han[(13 * i + 5) % 200] + han[(31 * i + 1) % 200] + han[i] + " 红色沙发" for i in range(200)
    ]
    files = []
    for run in range(4):
        TextTokenizer.train(queries, titles, vocab_size=259 + 40).save(tmp_path / f"{run}.json")
        files.append((tmp_path / f"{run}.json").read_bytes())
    assert len(set(files)) == 1
    vocab = TextTokenizer.load(tmp_path / "0.json").tokenizer.get_vocab()
    # the alphabet kept is the most frequent characters, ties broken by the character
    assert {"红", "色", "沙", "发"} <= set(vocab)
    assert [c for c in han if c in vocab] == han[:16]


def test_save_and_load_keep_the_ids_and_the_piece_limits(tmp_path) -> None:
    tokenizer = TextTokenizer.train(FURNITURE + CHINESE, CHINESE, 300, 1)
    path = tokenizer.save(tmp_path / "tok" / "tokenizer.json")
    again = TextTokenizer.load(path)
    texts = ["walnut desk", "pine shelf x", "红色椅子"]
    assert np.array_equal(again.encode(texts, 5), tokenizer.encode(texts, 5))
    assert (again.query_length, again.title_length) == (
        tokenizer.query_length, tokenizer.title_length
    )  # fmt: skip
    assert again.truncated == tokenizer.truncated
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        TextTokenizer.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        TextTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "future.json").write_text(json.dumps({"format": "prectr-tokenizer/9"}))
    with pytest.raises(ValueError, match=r"future\.json: tokenizer format 'prectr-tokenizer/9'"):
        TextTokenizer.load(tmp_path / "future.json")


def test_a_tokenizer_saved_before_piece_limits_loads_without_them(tmp_path) -> None:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[SEP]", "oak", "desk", "##s"])}
    old = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    old.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    (tmp_path / "old.json").write_text(old.to_str())  # the bare file earlier versions wrote
    tokenizer = TextTokenizer.load(tmp_path / "old.json")
    assert tokenizer.query_length is None and tokenizer.title_length is None
    assert tokenizer.encode(["oak desks"], 4).tolist() == [[3, 4, 5, 0]]
    tokenizer.choose_limits(["oak", "oak desk"], ["oak desks"])
    assert (tokenizer.query_length, tokenizer.title_length) == (2, 3)
