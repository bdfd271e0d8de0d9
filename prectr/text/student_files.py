"""A saved student's directory as the features read it, without building the network.

:func:`prectr.encoder.student.save_student` writes two files: :data:`WEIGHTS` (the student's
configuration, weights and notes, a ``torch.save`` dictionary) and :data:`TOKENIZER` (its
tokenizer with the piece limits it chose). The features need only the tokenizer and the
student's own piece limits (which may differ from the tokenizer's when the student was built
with others).
"""

from __future__ import annotations

from pathlib import Path

from prectr.text.tokenizer import TextTokenizer

WEIGHTS, TOKENIZER = "student.pt", "tokenizer.json"


def saved_student(directory: str | Path) -> dict:
    """What :data:`WEIGHTS` holds: ``config`` (the student's configuration as a dictionary),
    ``state`` (its weights) and ``meta``; a missing file is refused, naming the commands that
    write one."""
    import torch  # only where a student is read: the features of a log without one need none

    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no student ({WEIGHTS} missing; run "
                                "`prectr encoder distill` or `prectr encoder sft`)")  # fmt: skip
    return torch.load(path, map_location="cpu", weights_only=True)


def piece_limits(directory: str | Path) -> tuple[int | None, int | None]:
    """The pieces of a query and of a title the student saved in ``directory`` reads."""
    config = saved_student(directory)["config"]
    return config.get("query_length"), config.get("title_length")


def student_tokenizer(directory: str | Path) -> TextTokenizer:
    """The tokenizer saved with the student in ``directory``."""
    return TextTokenizer.load(Path(directory) / TOKENIZER)
