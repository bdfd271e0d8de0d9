"""The peer environment: FuxiCTR in its own virtual environment (`.venv-peer/`, git-ignored),
never a dependency of prectr; and running a command with its output logged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from record import ROOT

PEER_VENV = ROOT / ".venv-peer"
TORCH = "torch==2.13.0"
FUXICTR = "fuxictr==2.3.10"
POLARS = "polars<2"  # fuxictr 2.3.10 calls pl.scan_csv(dtypes=...), which polars 2 removed


def sh(cmd: list[str], log: Path | None = None, env: dict | None = None) -> str:
    """Run ``cmd``; its output goes to ``log`` (appended) and stdout is returned."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc.stdout


def peer_versions(python: Path) -> dict | None:
    probe = "import json, torch, fuxictr, polars, ray; print(json.dumps([m.__version__ for m in "
    probe += "(torch, fuxictr, polars, ray)]))"
    if not python.is_file():
        return None
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if proc.returncode:
        return None
    return dict(zip(("torch", "fuxictr", "polars", "ray"), json.loads(proc.stdout), strict=True))


def _usable(found: dict | None) -> bool:
    return bool(
        found
        and found["torch"].split("+")[0] == TORCH.split("==")[1]
        and found["fuxictr"] == FUXICTR.split("==")[1]
        and int(found["polars"].split(".")[0]) < 2
    )


def ensure_peer_venv(venv: Path, log: Path) -> tuple[dict, list[str]]:
    """Make (or reuse) the peer environment; return its versions and the commands run."""
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip"]
    found = peer_versions(python)
    if _usable(found):
        return found, [f"(reused {venv.relative_to(ROOT)}: {found})"]
    print(f"building the peer environment {venv} ...", flush=True)
    commands = [
        ["python3.11", "-m", "venv", str(venv)],
        [*pip, "install", "-q", TORCH],
        [*pip, "install", "--dry-run", FUXICTR, TORCH, POLARS],
        [*pip, "install", "-q", FUXICTR, TORCH, POLARS],
    ]
    for cmd in commands:
        out = sh(cmd, log)
        if "--dry-run" in cmd:
            planned = re.findall(r"\btorch-(\S+)", out.split("Would install")[-1])
            if any(not v.startswith(TORCH.split("==")[1]) for v in planned):
                sys.exit(f"pip would install torch {planned}, not {TORCH}: stopped")
    found = peer_versions(python)
    if not _usable(found):
        sys.exit(f"the peer environment has {found}, wanted {TORCH}, {FUXICTR}, {POLARS}")
    return found, [" ".join(c).replace(str(ROOT) + "/", "") for c in commands]
