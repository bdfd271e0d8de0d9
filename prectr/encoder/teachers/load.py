"""Teachers by name or path: ``smollm2``, ``minilm``, an adapted teacher's directory, a local
Hugging Face causal-LM directory, a ``.gguf`` file, a sentence-transformers directory, or
several of these joined by ``+`` (side by side)."""

from __future__ import annotations

from pathlib import Path

from prectr.encoder.teachers.base import Teacher

NAMED = ("smollm2", "minilm")


def load_teacher(spec: str | Path, batch_size: int = 32, dtype: str = "float32") -> Teacher:
    """The teacher that ``spec`` names; a clear error when it names nothing loadable.

    ``batch_size`` and ``dtype`` apply to language models (an adapted teacher keeps the dtype
    its head was trained with; sentence encoders run in float32)."""
    from prectr.encoder.teachers.adapt import ADAPTED_FILE, AdaptedTeacher
    from prectr.encoder.teachers.llm import CausalLMTeacher
    from prectr.encoder.teachers.sentence import BiEncoderTeacher, MiniLM, SentenceEncoder

    if "+" in str(spec) and not Path(spec).exists():
        from prectr.encoder.teachers.concat import ConcatTeacher

        return ConcatTeacher(
            [load_teacher(part, batch_size, dtype) for part in str(spec).split("+")]
        )
    if str(spec) == "smollm2":
        return CausalLMTeacher.smollm2(batch_size=batch_size, dtype=dtype)
    if str(spec) == "minilm":
        return BiEncoderTeacher(MiniLM(), "minilm")
    path = Path(spec)
    if (path / ADAPTED_FILE).is_file():
        return AdaptedTeacher.load(path, lambda base, kind: load_teacher(base, batch_size, kind))
    if (path / "modules.json").is_file():
        return BiEncoderTeacher(SentenceEncoder(path), f"sentence:{path.resolve().name}")
    if (path / "config.json").is_file() or (path.is_file() and path.suffix == ".gguf"):
        return CausalLMTeacher.from_pretrained(path, batch_size=batch_size, dtype=dtype)
    raise FileNotFoundError(
        f"teacher {spec}: not one of {', '.join(NAMED)}, an adapted teacher directory "
        f"({ADAPTED_FILE}), a sentence-transformers directory (modules.json), a model directory "
        "(config.json), a .gguf file, or several of these joined by +"
    )
