"""Atomic writes: a file or a directory appears whole under its final name, or not at all;
and where prectr caches what it derives once (:func:`cache_dir`).

The temporary file or directory is created with the process umask applied, as ``open`` and
``mkdir`` would create the final one (``tempfile`` makes them private: mode 0600 or 0700).
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import yaml

CACHE_ENV = "PRECTR_CACHE_DIR"


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched. The
    block creates the file (as ``open`` would: the umask applies). :func:`atomic_fs_file` on
    the local filesystem.
    """
    with atomic_fs_file(pafs.LocalFileSystem(), Path(path).absolute().as_posix()) as tmp:
        yield Path(tmp)


@contextmanager
def atomic_fs_file(filesystem: pafs.FileSystem, path: str) -> Iterator[str]:
    """:func:`atomic_file` on a pyarrow filesystem: yield a temporary path beside ``path`` in
    ``filesystem`` (a hidden name with 48 random bits); on success it is moved onto ``path``
    (a rename on a local filesystem, an object that appears whole on an object store)."""
    parent, name = posixpath.split(path)
    filesystem.create_dir(parent, recursive=True)
    tmp = posixpath.join(parent, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        filesystem.move(tmp, path)
    finally:
        if filesystem.get_file_info(tmp).type != pafs.FileType.NotFound:
            filesystem.delete_file(tmp)


def _beside(path: Path) -> Path:
    """A new hidden temporary directory beside ``path``, made as ``mkdir`` makes one (the
    umask applies)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            tmp.mkdir(0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    An existing non-empty ``path`` is refused unless ``overwrite`` is set. If the block raises,
    the temporary directory is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def claim_run_dir(
    run_dir: Path, settings: str, wanted: dict[str, Any], reopen: bool,
    what: str = "the config differs", overwrite: bool | None = None,
) -> None:  # fmt: skip
    """Create a run directory, or reopen one, and write its settings file atomically.

    ``settings`` names the file in ``run_dir`` (YAML or JSON by its suffix). A reopened run
    must hold the same settings (``what`` words the refusal); a new one needs a missing or
    empty directory, or ``overwrite``: a run there (a directory holding ``settings``) is then
    removed first, whatever state it was left in. ``overwrite`` None: the command offers no
    such choice.
    """
    path = run_dir / settings
    yaml_file = path.suffix in (".yaml", ".yml")
    if reopen:
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no {settings})")
        saved = yaml.safe_load(path.read_text()) if yaml_file else json.loads(path.read_text())
        if saved != wanted:
            raise ValueError(f"{run_dir}: {what} from the run's ({settings}); resume needs "
                             "the same")  # fmt: skip
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            alternative = "" if overwrite is None else ", or --overwrite to start it afresh"
            raise FileExistsError(f"{run_dir} is not empty (pass --resume to continue "
                                  f"it{alternative})")  # fmt: skip
        if not path.is_file():
            raise FileExistsError(f"{run_dir} holds no {settings}: not a run, so --overwrite "
                                  "leaves it alone")  # fmt: skip
        old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
        os.replace(run_dir, old)
        shutil.rmtree(old)
    text = yaml.safe_dump(wanted, sort_keys=False) if yaml_file else json.dumps(wanted, indent=2)
    with atomic_file(path) as tmp:
        tmp.write_text(text if yaml_file else text + "\n")


def cache_dir() -> Path:
    """Where prectr keeps what it derives once and reuses: ``$PRECTR_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/prectr``, else ``~/.cache/prectr``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prectr"
