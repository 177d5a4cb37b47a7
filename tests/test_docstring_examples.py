"""Every public function and class of mlxvision has a docstring with a ``>>>`` example.

What counts as public:

1. Every name listed in the ``__all__`` of any ``mlxvision`` package or module (``mlxvision``
   itself, ``data``, ``data.datasets``, ``data.download``, ``models``, ``engine``,
   ``checkpoint``, ``export``, ``ops``, ``recipes``, ...), wherever the object is defined.
2. The modules that users import from directly but that have no ``__all__``: the top-level
   modules (``mlxvision.backend``, ``mlxvision.plot``, ``mlxvision.tune``, ...) and the modules
   directly inside ``mlxvision.data`` and ``mlxvision.engine`` (``data.transforms``,
   ``data.loader``, ``engine.callbacks``, ``engine.schedules``, ...). Their public names are
   the functions and classes defined in the module whose names do not start with ``_``.

The modules inside ``models``, ``checkpoint``, ``export``, ``ops`` and ``recipes`` are their
packages' implementation: those packages list their public API in ``__all__`` (rule 1). The
``cli`` module is the command line, documented by its ``--help``. Only functions and classes
are checked (not constants, not methods). The example must sit under an ``Example:`` (or
``Examples:``) heading, the Google-style section that the API reference renders as code;
``tests/test_doctests.py`` runs it.

A module that cannot be imported because an optional dependency is missing is not checked
(the test warns which).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from types import ModuleType

import pytest

import mlxvision

DIRECT_MODULE_PACKAGES = ("mlxvision", "mlxvision.data", "mlxvision.engine")
NOT_API = ("mlxvision.cli",)
_EXAMPLE = re.compile(r"^[ \t]*Examples?:[ \t]*\n(?:.*\n)*?[ \t]*>>> ", re.M)


def _module_names() -> list[str]:
    found = pkgutil.walk_packages(mlxvision.__path__, "mlxvision.")
    return ["mlxvision", *sorted(m.name for m in found if m.name not in NOT_API)]


def _import(name: str) -> ModuleType | None:
    """The module, or None when an optional third-party dependency is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] == "mlxvision":
            raise
        return None


def _is_public_module(name: str) -> bool:
    parent, _, last = name.rpartition(".")
    return parent in DIRECT_MODULE_PACKAGES and not last.startswith("_")


def public_api() -> tuple[dict[str, object], list[str]]:
    """``{"module.name": object}`` for every public function and class, and skipped modules."""
    api: dict[str, object] = {}
    skipped: list[str] = []
    for name in _module_names():
        module = _import(name)
        if module is None:
            skipped.append(name)
            continue
        if hasattr(module, "__all__"):
            names = list(module.__all__)
        elif _is_public_module(name):
            names = [
                n
                for n, obj in vars(module).items()
                if not n.startswith("_") and getattr(obj, "__module__", None) == name
            ]
        else:
            continue
        for attr in names:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                api.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return api, skipped


def has_example(obj: object) -> bool:
    """Whether ``obj``'s own docstring has a ``>>>`` line under an ``Example:`` heading."""
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else ""
    return _EXAMPLE.search(inspect.cleandoc(doc) + "\n") is not None


def test_the_rule_finds_the_public_api():
    api, _ = public_api()
    for name in (
        "mlxvision.models.registry.create_model",  # top-level and models.__all__
        "mlxvision.engine.trainer.Trainer",
        "mlxvision.data.transforms.RandomCrop",  # a public module without __all__
        "mlxvision.data.transforms.FlipParams",
        "mlxvision.engine.callbacks.EarlyStopping",
        "mlxvision.data.download.ChecksumError",  # a module's __all__
        "mlxvision.export.verify.VerifyResult",  # re-exported by a package's __all__
        "mlxvision.tune.tune",
        "mlxvision.plot.plot_history",
    ):
        assert name in api, f"{name} is not found by the rule"
    assert not any(name.startswith("mlxvision.cli.") for name in api)
    assert "mlxvision.export.passes.optimize" not in api  # implementation module
    assert not any(name.rsplit(".", 1)[-1].startswith("_") for name in api)


def test_has_example_needs_a_doctest_under_an_example_heading():
    def documented():
        """Do a thing.

        Example:
            >>> 1 + 1
            2
        """

    def prose_only():
        """Do a thing; no example."""

    def stray_prompt():
        """Do a thing: type ``>>> 1`` in a shell."""

    class NoDocstring:
        pass

    assert has_example(documented)
    assert not has_example(prose_only)
    assert not has_example(stray_prompt)
    assert not has_example(NoDocstring)


def test_every_public_function_and_class_has_an_example():
    api, skipped = public_api()
    assert len(api) > 100, f"only {len(api)} public names found; is the walk broken?"
    if skipped:
        missing = ", ".join(skipped)
        warnings.warn(f"not checked, optional dependency missing: {missing}", stacklevel=1)
    offenders = sorted(name for name, obj in api.items() if not has_example(obj))
    if offenders:
        heading = f"{len(offenders)} public functions/classes lack an `Example:` with `>>>`:"
        pytest.fail("\n  ".join([heading, *offenders]), pytrace=False)
