"""Atomic writes respect the umask and leave nothing behind on failure; run directories are
claimed, reopened or replaced only as asked."""

import os
import stat

import pyarrow.fs as pafs
import pytest

from prectr.io import atomic_dir, atomic_file, atomic_fs_file, claim_run_dir


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_atomic_file_gets_the_mode_open_would_give_it(tmp_path, umask):
    with atomic_file(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    with open(tmp_path / "plain", "w") as f:
        f.write("{}")
    assert mode(tmp_path / "a.json") == 0o666 & ~umask == mode(tmp_path / "plain")


def test_an_atomic_directory_gets_the_mode_mkdir_would_give_it(tmp_path, umask):
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x")
    assert mode(tmp_path / "d") == 0o777 & ~umask
    assert mode(tmp_path / "d" / "x") == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_content_and_no_temporary(tmp_path):
    (tmp_path / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "a") as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert (tmp_path / "a").read_text() == "old" and os.listdir(tmp_path) == ["a"]


def test_an_atomic_file_on_a_pyarrow_filesystem_appears_whole_or_not_at_all(tmp_path, umask):
    filesystem, target = pafs.LocalFileSystem(), (tmp_path / "sub" / "a").as_posix()
    with atomic_fs_file(filesystem, target) as tmp, filesystem.open_output_stream(tmp) as f:
        f.write(b"old")
    assert mode(target) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_fs_file(filesystem, target) as tmp:
        with filesystem.open_output_stream(tmp) as f:
            f.write(b"new")
        raise RuntimeError
    assert (tmp_path / "sub" / "a").read_text() == "old"
    assert os.listdir(tmp_path / "sub") == ["a"]


def test_a_full_directory_is_replaced_only_when_asked_naming_the_flag(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("old")
    with (
        pytest.raises(FileExistsError, match="pass --overwrite to replace it"),
        atomic_dir(tmp_path / "d"),
    ):
        pass
    with atomic_dir(tmp_path / "d", overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert os.listdir(tmp_path / "d") == ["new"] and os.listdir(tmp_path) == ["d"]


def test_overwrite_replaces_a_run_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    claim_run_dir(run, "config.yaml", {"a": 1}, reopen=False, overwrite=False)
    (run / "checkpoints").mkdir()
    with pytest.raises(FileExistsError, match="--resume to continue it, or --overwrite"):
        claim_run_dir(run, "config.yaml", {"a": 2}, reopen=False, overwrite=False)
    with pytest.raises(FileExistsError, match=r"--resume to continue it\)"):  # no such choice
        claim_run_dir(run, "config.yaml", {"a": 2}, reopen=False)
    claim_run_dir(run, "config.yaml", {"a": 2}, reopen=False, overwrite=True)
    assert os.listdir(run) == ["config.yaml"] and (run / "config.yaml").read_text() == "a: 2\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a run"):
        claim_run_dir(other, "config.yaml", {"a": 1}, reopen=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
