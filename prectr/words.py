"""Counts in messages: "1 problem", "2 problems", "1,024 rows"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` (with thousands separators) and ``noun``, in the plural unless ``n`` is 1;
    ``plural`` for a noun that does not take an ``s`` (query, queries)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
