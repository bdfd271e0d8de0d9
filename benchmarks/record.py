"""What every benchmark writes: the machine it ran on, and its result file, atomically.

Importing it also puts this checkout's root first on ``sys.path``: a benchmark run as a script
(``python benchmarks/x.py``) would otherwise import whichever checkout the environment has
installed (an editable install of another worktree), and time or measure that code instead.
Every benchmark imports this module before ``prectr``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))

from prectr.io import atomic_file  # noqa: E402  (after the checkout is on the path)


def machine(**extra: Any) -> dict[str, Any]:
    """The processor, cores, Python and torch of this run, with ``extra`` settings."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": version("torch"),
        **extra,
    }


def write_record(out: Path, record: dict) -> None:
    """``record`` as indented JSON at ``out``, written atomically."""
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
