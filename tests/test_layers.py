"""Packages import alone: evaluation without the simulator (a plain log's evaluation must not
need it), data without the encoder, the training engine without the data, the models or the
encoder. Each import runs in a fresh interpreter."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("package", "absent"),
    [
        ("prectr.evaluation.run", ("prectr.data.simulate", "prectr.encoder")),
        ("prectr.evaluation.commands", ("prectr.data.simulate", "prectr.encoder")),
        ("prectr.data.dataset", ("prectr.data.simulate", "prectr.encoder")),
        ("prectr.data.stream", ("prectr.data.simulate", "prectr.encoder")),
        ("prectr.data.shards", ("prectr.data.simulate", "prectr.encoder")),
        ("prectr.data.features", ("prectr.encoder",)),
        # the encoder trains on the engine without reaching into the ranking models' trainer
        (
            "prectr.train.engine",
            ("prectr.data", "prectr.encoder", "prectr.models", "prectr.train.trainer"),
        ),
    ],
)
def test_a_package_imports_without_what_it_does_not_need(package, absent):
    code = (
        f"import sys, {package}\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({absent!r}))\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {package} loads {out.stdout.strip()}"
