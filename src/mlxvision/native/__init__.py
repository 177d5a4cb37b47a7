"""Native CPU kernels: oneDNN's convolution passes as MLX primitives, built on first use.

MLX's CPU convolution runs at a fraction of the machine's speed (ResNet-20's layers 3.7-9.5×
slower than oneDNN's, ``benchmarks/results/cpu.md``). Where oneDNN is installed (Debian/Ubuntu:
``apt install libdnnl-dev cmake g++``) and ``nanobind`` is in the environment (the ``cpu``
extra), :func:`onednn_conv` compiles ``onednn_conv.cpp`` against the installed MLX once (about
15 s), keeps the library in ``$XDG_CACHE_HOME/mlxvision/native`` (``~/.cache/...``) under a key
of the source, MLX's and Python's versions, and loads it; :func:`mlxvision.ops.conv2d` then
computes float32 convolutions on the CPU with it. Elsewhere it returns None and
:func:`native_status` says why. ``MLXVISION_NATIVE_CONV=0`` turns it off; ``=1`` makes a
missing or failed build an error instead of a fallback.

Example:
    >>> isinstance(native_status(), str)
    True
"""

from __future__ import annotations

import ctypes.util
import fcntl
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from ..backend import switch_setting

SOURCE = Path(__file__).parent
MODULE = "_mlxvision_onednn"
_STATUS = {"reason": "not checked yet"}


def native_status() -> str:
    """What :func:`onednn_conv` found: ``"loaded PATH"`` or why it is not used.

    Example:
        >>> native_status() != ""
        True
    """
    return _STATUS["reason"]


def cache_folder() -> Path:
    """Where built libraries are kept: ``$XDG_CACHE_HOME/mlxvision/native``.

    Example:
        >>> cache_folder().name
        'native'
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlxvision" / "native"


def build_key() -> str:
    """A key of everything the library depends on: its source, MLX's, nanobind's and Python's
    versions and the machine.

    Example:
        >>> len(build_key())
        16
    """
    import mlx.core as mx

    digest = hashlib.sha256()
    for name in ("onednn_conv.cpp", "CMakeLists.txt"):
        digest.update((SOURCE / name).read_bytes())
    try:
        import nanobind

        nanobind_version = nanobind.__version__
    except ImportError:
        nanobind_version = "none"
    facts = (mx.__version__, nanobind_version, sys.version, platform.machine())
    digest.update("|".join(facts).encode())
    return digest.hexdigest()[:16]


@functools.cache
def onednn_conv() -> ModuleType | None:
    """The compiled module (``conv2d``, ``input_grad``, ``weight_grad``), built if needed, or
    None where it cannot be (see :func:`native_status`).

    Example:
        >>> module = onednn_conv()
        >>> module is None or hasattr(module, "conv2d")
        True
    """
    setting = switch_setting("MLXVISION_NATIVE_CONV")
    if setting is False:
        _STATUS["reason"] = "turned off by MLXVISION_NATIVE_CONV=0"
        return None
    try:
        module = _load_or_build()
    except _Unavailable as reason:
        _STATUS["reason"] = str(reason)
        if setting:
            raise RuntimeError(f"MLXVISION_NATIVE_CONV=1: {reason}") from None
        return None
    return module


class _Unavailable(Exception):
    """Why the native library cannot be built or loaded here."""


def _load_or_build() -> ModuleType:
    if platform.system() != "Linux":
        raise _Unavailable(f"not built on {platform.system()} (MLX's own kernels are used)")
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if importlib.util.find_spec("nanobind") is None:
        missing.append("nanobind (pip install nanobind)")
    if ctypes.util.find_library("dnnl") is None:
        missing.append("oneDNN (apt install libdnnl-dev)")
    if missing:
        raise _Unavailable("missing " + ", ".join(missing))
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"{MODULE}-{build_key()}.so"
    with open(folder / f"{library.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then load it
        if not library.exists():
            _build(library)
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(library))
    spec = importlib.util.spec_from_file_location(MODULE, library, loader=loader)
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except ImportError as err:
        raise _Unavailable(f"{library} does not load: {err}") from err
    _STATUS["reason"] = f"loaded {library}"
    return module


def _build(library: Path) -> None:
    """Compile into a temporary folder beside ``library`` and move the result into place, so
    that an interrupted build leaves nothing at ``library``."""
    import mlx
    import nanobind

    with tempfile.TemporaryDirectory(dir=library.parent, prefix="build-") as work:
        log = Path(work) / "build.log"
        configure = [
            "cmake", "-S", str(SOURCE), "-B", work, "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dnanobind_ROOT={nanobind.cmake_dir()}",
            f"-DMLX_DIR={Path(mlx.__path__[0]) / 'share' / 'cmake' / 'MLX'}",
        ]  # fmt: skip
        build = ["cmake", "--build", work, "--parallel", str(os.cpu_count() or 1)]
        with open(log, "w") as output:
            for command in (configure, build):
                result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    tail = log.read_text()[-2000:]
                    raise _Unavailable(f"the build failed ({' '.join(command[:2])}):\n{tail}")
        built = next(Path(work).glob(f"{MODULE}*.so"), None)
        if built is None:
            raise _Unavailable(f"the build made no {MODULE}*.so")
        os.replace(built, library)
