"""prectr.lazy: a package's names imported on first access, kept, and listed before."""

import sys

import pytest


def test_a_name_loads_its_submodule_on_first_access_only(tmp_path, monkeypatch):
    package = tmp_path / "lazypkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from prectr.lazy import lazy_exports\n"
        "__getattr__, __dir__ = lazy_exports(__name__, {'heavy_value': 'heavy'})\n"
    )
    (package / "heavy.py").write_text("heavy_value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazypkg

    try:
        assert "lazypkg.heavy" not in sys.modules
        assert "heavy_value" in dir(lazypkg)  # listed before it loads
        assert lazypkg.heavy_value == 42 and "lazypkg.heavy" in sys.modules
        assert vars(lazypkg)["heavy_value"] == 42  # kept: later reads skip the hook
        with pytest.raises(AttributeError, match="'lazypkg' has no attribute 'other'"):
            lazypkg.other  # noqa: B018
    finally:
        for name in ("lazypkg", "lazypkg.heavy"):
            sys.modules.pop(name, None)
