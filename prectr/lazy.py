"""Names a package exports but loads on first use (PEP 562), so that importing one of its
light submodules (a command's choices, a settings class) does not load PyTorch or SciPy
through the package's ``__init__``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, modules: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``package``: each name of ``modules``
    (name -> its submodule, relative to the package) is imported on first access and kept in
    the package, and ``dir()`` lists them before they are."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        if name not in modules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(import_module(f"{package}.{modules[name]}"), name)
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(modules))

    return __getattr__, __dir__
