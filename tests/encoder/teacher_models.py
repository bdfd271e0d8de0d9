"""Tiny, randomly initialised stand-ins for the real teachers, saved as local model directories,
and a counting fake teacher: they run the same code paths as SmolLM2 and MiniLM in milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from prectr.encoder.teacher import Teacher

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WORDS = (
    "you judge product search results grades 0 1 2 3 irrelevant complement used together with "
    "what the query asks for substitute a similar not exactly was asked exact answer digit only "
    "grade product oak chair red shoe sofa lamp table desk blue rack closet storage in by "
    "<|system|> <|user|> <|assistant|> <|end|>"
)


def _word_tokenizer(chat: bool):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = sorted(set(WORDS.split()) | set(":;.,()\n"))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[BOS]", *pieces])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", behavior="removed"),
            pre_tokenizers.Split(Regex(r"<\|\w+\|>|\w+|[^\w\s]|\n"), behavior="isolated"),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llm_dir(root: Path, chat: bool = True, hidden_size: int = 32) -> Path:
    """A 2-layer Llama with a word-level tokenizer, saved like a Hugging Face model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _word_tokenizer(chat)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=2, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = root / f"{'chat' if chat else 'plain'}-llm-{hidden_size}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_sentence_dir(root: Path) -> Path:
    """A 1-layer BERT with mean pooling, saved as a sentence-transformers directory."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert = root / "bert"
    bert.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS.split()))]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    BertModel(config).save_pretrained(bert)
    model = SentenceTransformer(modules=[Transformer(str(bert)), Pooling(16)], device="cpu")
    out = root / "sentence"
    model.save(str(out))
    return out


class CountingTeacher(Teacher):
    """Deterministic outputs from the pair's text; counts the pairs it was asked to encode and
    can fail after a number of calls, like a killed run."""

    def __init__(self, hidden_size: int = 6, fail_after_calls: int | None = None, salt: str = ""):
        self.name = "counting"
        self.hidden_size = hidden_size
        self.fail_after_calls = fail_after_calls
        self.salt = salt
        self.calls = 0
        self.encoded = 0

    def encode(self, queries, titles):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.encoded += len(queries)
        hidden = np.array(
            [[len(re.findall(r"\w", q + t)) % (k + 3) for k in range(self.hidden_size)]
             for q, t in zip(queries, titles, strict=True)], dtype=np.float32,
        )  # fmt: skip
        return hidden[:, :4] - hidden[:, :4].mean(1, keepdims=True), hidden

    def fingerprint(self):
        return {"kind": "counting", "salt": self.salt, "hidden": self.hidden_size}
