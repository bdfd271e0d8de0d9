"""What every benchmark writes: the machine it ran on, and its result file, atomically."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prectr.io import atomic_file


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
