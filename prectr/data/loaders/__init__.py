"""Loaders that map public search datasets, in their own file formats, into a search log.

:data:`LOADERS` maps a name to a :class:`Loader`: call it with the dataset's source paths, in the
order of its ``sources``, to get a validated :class:`~prectr.data.schema.SearchLog`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prectr.data.loaders.esci import load_esci
from prectr.data.loaders.jdsearch import load_jdsearch
from prectr.data.schema import SearchLog


@dataclass(frozen=True)
class Loader:
    """A dataset loader: the source files it takes, in order, and a one-line description."""

    load: Callable[..., SearchLog]
    sources: tuple[str, ...]
    description: str

    def __call__(self, *paths: str | Path) -> SearchLog:
        if len(paths) != len(self.sources):
            raise ValueError(
                f"expected {len(self.sources)} source paths ({', '.join(self.sources)}), "
                f"got {len(paths)}"
            )
        return self.load(*paths)


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
}

__all__ = ["LOADERS", "Loader", "load_esci", "load_jdsearch"]
