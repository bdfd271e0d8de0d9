"""What every `prectr` command prints through: one console, one number format."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)


def fmt(value: float | None, digits: int = 4) -> str:
    """A table cell: ``-`` for a missing value, an int with thousands separators, a float with
    ``digits`` decimals."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"
