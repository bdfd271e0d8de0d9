"""Run directories are claimed, reopened or replaced only as asked."""

import os

import pytest

from prectr.io import claim_run_dir


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
