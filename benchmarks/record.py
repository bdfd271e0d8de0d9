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

BF16_UNITS = ("avx512_bf16", "amx_bf16")  # the /proc/cpuinfo flags of native bfloat16 products


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The processor's model name and its native bfloat16 units (from ``cpuinfo``; the
    platform's processor name and no units where it cannot be read): the same command runs
    at different speeds on, say, an AMD EPYC without AMX and an Intel Xeon with it, so every
    figure records which one it came from."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # the first processor's block
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {"model": name, "bf16_units": [unit for unit in BF16_UNITS if unit in flags]}


def machine(**extra: Any) -> dict[str, Any]:
    """The processor (:func:`cpu`), cores, Python and torch of this run, with ``extra``
    settings."""
    return {
        "processor": cpu(),
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
