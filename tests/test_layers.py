"""Packages import alone: evaluation without the simulator (a plain log's evaluation must not
need it), data without the encoder, the training engine without the data, the models or the
encoder. Each import runs in a fresh interpreter. And no module reaches back up the flow, even
inside a function: a scan of every module's source finds each import."""

import ast
import graphlib
import importlib.util
import subprocess
import sys
from pathlib import Path

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


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every prectr module each module of ``package`` imports, found by reading its source:
    imports at the top, inside functions and under ``TYPE_CHECKING`` alike (relative imports
    resolved)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None, package
    root = Path(spec.origin).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join((package, *parts[:-1], *([] if parts[-1] == "__init__" else parts[-1:])))
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x: the package the module is in, or above
                    home = module.split(".") if parts[-1] == "__init__" else module.split(".")[:-1]
                    anchor = home[: len(home) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        found[module] = {n for n in names if n.startswith("prectr")}
    return found


@pytest.mark.parametrize(
    ("package", "absent"),
    [
        # features read text through prectr.text, never through the encoder, which reads logs
        ("prectr.data", ("prectr.encoder",)),
        # the experiment config names the calibrations; a model never reads the config
        ("prectr.models", ("prectr.config",)),
        # the text layer under both the features and the encoder
        ("prectr.text", ("prectr.data", "prectr.encoder", "prectr.models", "prectr.config")),
    ],
)
def test_no_module_of_a_package_imports_what_lies_downstream(package, absent):
    reaching = {
        module: sorted(n for n in names if n.startswith(absent))
        for module, names in imported_modules(package).items()
    }
    reaching = {module: names for module, names in reaching.items() if names}
    assert reaching == {}, f"{package} reaches back: {reaching}"


def test_the_scan_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    (tmp_path / "prectr_probe").mkdir()
    (tmp_path / "prectr_probe" / "__init__.py").write_text("from . import inner\n")
    (tmp_path / "prectr_probe" / "inner.py").write_text(
        "def f():\n    from prectr.encoder.student import load_student\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = imported_modules("prectr_probe")
    assert "prectr_probe.inner" in found["prectr_probe"]
    assert "prectr.encoder.student" in found["prectr_probe.inner"]


# the registry imports the models so that they register; they import it for ``register``
REGISTRATION = {("prectr.models.registry", "prectr.models.baselines"),
                ("prectr.models.registry", "prectr.models.prectr")}  # fmt: skip


def test_no_modules_import_each_other_round_a_circle():
    found = imported_modules("prectr")

    def module(name: str) -> str:  # the module a name is, or is in
        while name not in found:
            name = name.rpartition(".")[0]
        return name

    graph = {
        importer: {
            imported
            for imported in map(module, names)
            # a module's own packages are already being imported when it is
            if not importer.startswith(f"{imported}.") and imported != importer
            and (importer, imported) not in REGISTRATION
        }
        for importer, names in found.items()
    }  # fmt: skip
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"modules import each other round a circle: {' -> '.join(err.args[1])}")
