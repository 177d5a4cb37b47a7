"""Run the ``>>>`` examples in every module's docstrings."""

import doctest
import importlib
import pkgutil

import pytest

import mlxvision

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(mlxvision.__path__, "mlxvision.") if "cli" not in m.name
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
