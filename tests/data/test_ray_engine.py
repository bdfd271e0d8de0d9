"""prepare on Ray: the local engine's output row for row, histories that never reach into the
future across chunks encoded by different workers, and a clear error without Ray."""

import sys

import pytest

from prectr.cli import main
from prectr.data.features import FeatureConfig
from prectr.data.history import HistoryIndex
from prectr.data.ray_engine import RayEngine
from tests.train.test_data import _prepare, _same_prepared, assert_no_future_event_leaks


@pytest.fixture(scope="module")
def engine():
    """A local Ray with 2 CPUs (two workers), started once for the module."""
    with RayEngine(cpus=2) as started:
        yield started


def test_the_ray_engine_writes_what_the_local_engine_writes_on_tiny(tiny_world, tmp_path, engine):
    """Eight chunks on two workers against the whole log as one chunk in this process."""
    local = _prepare(tiny_world, tmp_path / "local", chunk_rows=10**9)
    on_ray = _prepare(tiny_world, tmp_path / "ray", chunk_rows=20_000, engine=engine)
    _same_prepared(on_ray, local)


def test_the_driver_folds_the_states_as_the_local_engine_does(tiny_world, tmp_path, engine,
                                                             monkeypatch):  # fmt: skip
    """The folded state keeps what the local engine's keeps: crowd events within the window
    only (``crowd_days``), so the driver's state stays bounded as the local one does."""
    folds = []
    remaining = HistoryIndex.remaining

    def noted(self, shown, *lengths):
        folds.append(lengths)
        return remaining(self, shown, *lengths)

    monkeypatch.setattr(HistoryIndex, "remaining", noted)
    _prepare(tiny_world, tmp_path / "ray", chunk_rows=20_000, engine=engine)
    crowd_days = FeatureConfig().crowd_days
    assert len(folds) > 3 and all(len(f) == 4 and f[3] == crowd_days for f in folds)


def test_a_future_event_in_another_chunk_never_reaches_an_earlier_history_on_ray(
    tiny_world, tmp_path, engine
):
    assert_no_future_event_leaks(tiny_world, tmp_path, engine)


def test_without_ray_the_engine_says_how_to_install_it(tiny_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "configs/dnn_small.yaml", "--log", str(tiny_world), "--out",
              str(tmp_path / "run"), "--engine", "ray"])  # fmt: skip
    assert exit_.value.code == 2
    assert "pip install 'prectr[ray]'" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "run").exists()


def test_ray_settings_without_the_ray_engine_or_together_are_refused(tiny_world, tmp_path, capsys):
    with pytest.raises(ValueError, match="sizes a local Ray"):
        RayEngine("auto", cpus=2)
    with pytest.raises(SystemExit):
        main(["prepare", "configs/dnn_small.yaml", "--log", str(tiny_world), "--out",
              str(tmp_path / "run"), "--cpus", "2"])  # fmt: skip
    assert "with --engine ray" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "run").exists()
