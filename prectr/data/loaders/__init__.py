"""Loaders that map public search datasets, in their own file formats, into a search log.

:data:`LOADERS` maps a name to a :class:`Loader`: call it with the dataset's source paths, in the
order of its ``sources``, to get a validated :class:`~prectr.data.schema.SearchLog`. Its
``options`` name the keyword arguments it takes beyond its files; it refuses any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prectr.data.loaders.esci import load_esci
from prectr.data.loaders.jdsearch import load_jdsearch
from prectr.data.loaders.pairs import load_pairs
from prectr.data.schema import SearchLog


@dataclass(frozen=True)
class Loader:
    """A dataset loader: the source files it takes, in order, a one-line description and the
    options it takes."""

    load: Callable[..., SearchLog]
    sources: tuple[str, ...]
    description: str
    options: tuple[str, ...] = ()

    def __call__(self, *paths: str | Path, **options: Any) -> SearchLog:
        if len(paths) != len(self.sources):
            raise ValueError(
                f"expected {len(self.sources)} source paths ({', '.join(self.sources)}), "
                f"got {len(paths)}"
            )
        refused = sorted(set(options) - set(self.options))
        if refused:
            takes = ", ".join(self.options) or "none"
            raise ValueError(f"this loader takes no option {', '.join(refused)} (its options: "
                             f"{takes})")  # fmt: skip
        return self.load(*paths, **options)


LOADERS: dict[str, Loader] = {
    "esci": Loader(
        load_esci,
        ("shopping_queries_dataset_examples.parquet", "shopping_queries_dataset_products.parquet"),
        "Amazon Shopping Queries (ESCI), US locale: human E/S/C/I grades, no clicks",
    ),
    "jdsearch": Loader(
        load_jdsearch,
        ("behaviour file (release_data.txt)", "product file (product_data.txt)"),
        "JDsearch: real JD.com searches with clicks and user histories, no grades",
    ),
    "pairs": Loader(
        load_pairs,
        ("graded pairs file (.csv, .tsv, .json, .jsonl or .parquet)",),
        "human-graded (query, title) pairs, one per row: query, title and an integer grade "
        "(grade, relevance or label), no clicks",
        ("grade_map", "columns"),
    ),
}

__all__ = ["LOADERS", "Loader", "load_esci", "load_jdsearch", "load_pairs"]
