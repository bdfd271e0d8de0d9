"""What every `prectr` command prints through: one console, one number format, and a flag
parser's own error message."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

console = Console(highlight=False)


def fmt(value: float | None, digits: int = 4) -> str:
    """A table cell: ``-`` for a missing value, an int with thousands separators, a float with
    ``digits`` decimals."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def flag_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type`` whose ValueError message reaches the user (argparse
    words a ValueError as "invalid <name> value" alone)."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    checked.__name__ = parse.__name__
    return checked
