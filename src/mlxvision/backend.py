"""Loading MLX: a fast BLAS on Linux, and a message that says how to fix a missing backend.

On Linux the plain ``mlx`` package has no backend: ``import mlx.core`` fails until one of the
extras ``mlx[cpu]``, ``mlx[cuda12]`` or ``mlx[cuda13]`` is installed. mlxvision mirrors them as
its own extras and names the right one when the import fails.

The Linux CPU wheel of MLX links the reference BLAS, which makes matrix products tens of times
slower than an optimized one. When an optimized BLAS with the standard CBLAS symbols is installed
(Debian/Ubuntu: ``apt install libopenblas0-pthread``), mlxvision loads it before ``mlx.core`` so
that MLX's calls resolve to it. ``MLXVISION_BLAS=off`` turns this off;
``MLXVISION_BLAS=/path/lib.so`` chooses the library.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "MLX has no usable backend in this environment. On Linux install exactly one backend: "
    "`pip install 'mlxvision[cpu]'` (CPU) or `pip install 'mlxvision[cuda]'` (NVIDIA GPU, CUDA 12; "
    "`mlxvision[cuda13]` for CUDA 13). On macOS, `pip install mlxvision` is enough (Apple silicon)."
)

BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4",
)


@dataclass
class BlasChoice:
    """Which BLAS mlxvision put in front of MLX's, and why.

    ``library`` is the path of the library loaded, or ``None`` when MLX keeps its own.

    Example:
        >>> choice = preload_blas()  # done once, when mlxvision is imported
        >>> isinstance(choice, BlasChoice), choice.reason != ""
        (True, True)
        >>> info()["blas_reason"] == choice.reason
        True
    """

    library: str | None
    reason: str


NOT_CHECKED = "not checked yet"
BLAS = BlasChoice(None, NOT_CHECKED)


def preload_blas() -> BlasChoice:
    """Load an optimized BLAS globally before ``mlx.core``, on Linux; record what was done.

    Example:
        >>> preload_blas().reason != ""
        True
    """
    global BLAS
    setting = os.environ.get("MLXVISION_BLAS", "auto").strip()
    if platform.system() != "Linux":
        BLAS = BlasChoice(None, f"not needed on {platform.system()}")
    elif setting.lower() in ("off", "0", "none", "reference"):
        BLAS = BlasChoice(None, "turned off by MLXVISION_BLAS")
    elif BLAS.reason != NOT_CHECKED:
        pass  # decided when mlxvision was imported: MLX has loaded its BLAS since
    elif "mlx.core" in sys.modules:
        BLAS = BlasChoice(None, "mlx.core was imported before mlxvision; import mlxvision first")
    else:
        candidates = BLAS_CANDIDATES if setting.lower() == "auto" else (setting,)
        BLAS = _load_first(candidates, explicit=setting.lower() != "auto")
    return BLAS


def _load_first(candidates: tuple[str, ...], explicit: bool) -> BlasChoice:
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            lib.cblas_sgemm  # noqa: B018  (raises AttributeError without CBLAS symbols)
        except (OSError, AttributeError) as err:
            if explicit:
                raise ImportError(f"MLXVISION_BLAS={path}: not usable as a BLAS ({err})") from err
            continue
        return BlasChoice(path, "optimized BLAS loaded before mlx.core")
    if explicit:
        raise ImportError(f"MLXVISION_BLAS={candidates[0]}: no such file")
    return BlasChoice(
        None,
        "no optimized BLAS found; MLX uses its reference BLAS (slow matrix products). "
        "Install one: `sudo apt install libopenblas0-pthread` (Debian/Ubuntu)",
    )


_BLAS_THREAD_SETTERS = ("openblas_set_num_threads", "bli_thread_set_num_threads")
BLAS_THREADS: dict[str, int] = {}  # {"count": n} once set_blas_threads set one


def set_blas_threads(count: int) -> bool:
    """Make the BLAS :func:`preload_blas` loaded use ``count`` threads; return whether it could.

    For several processes sharing one machine's cores (data-parallel training on a CPU), one
    thread each keeps them from fighting over the cores. ``False`` when mlxvision loaded no
    BLAS (macOS, or MLX's own) or the library has no such setting.

    Example:
        >>> set_blas_threads(os.cpu_count() or 1) in (True, False)
        True
    """
    if count < 1:
        raise ValueError(f"set_blas_threads: count must be a positive int, got {count}")
    if BLAS.library is None:
        return False
    lib = ctypes.CDLL(BLAS.library, mode=ctypes.RTLD_GLOBAL)
    for name in _BLAS_THREAD_SETTERS:
        setter = getattr(lib, name, None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter(int(count))
            BLAS_THREADS["count"] = int(count)
            return True
    return False


def import_mlx():
    """Import and return ``mlx.core`` (after :func:`preload_blas`), naming the fix if it fails.

    Example:
        >>> mx = import_mlx()
        >>> int(mx.array(2) + 3)
        5
    """
    preload_blas()
    keep_kernel_cache()
    try:
        import mlx.core as mx
    except ImportError as err:
        where = f"{platform.system()} {platform.machine()}, Python {sys.version.split()[0]}"
        raise ImportError(f"Could not import mlx.core ({err}) on {where}. {INSTALL_HINT}") from err
    tune_malloc()
    tune_cuda_graphs()
    return mx


_OPT_OUT = ("default", "off", "0")  # values of an MLXVISION_* variable that leave MLX's choice


def switch_setting(name: str) -> bool | None:
    """An ``MLXVISION_*`` on/off variable: ``1`` → True, ``0`` → False, unset → None (the
    caller's default); anything else is an error naming the variable.

    Example:
        >>> switch_setting("MLXVISION_NO_SUCH_SWITCH") is None
        True
    """
    setting = os.environ.get(name, "").strip()
    if setting not in ("", "0", "1"):
        raise ValueError(f"{name}: expected 0 or 1, got {setting!r}")
    return None if not setting else setting == "1"


def _mlx_variable_or_setting(mlx_name: str, own_name: str) -> tuple[str | None, str]:
    """``(decided, setting)`` for a setting of ours that sets one of MLX's variables:
    ``decided`` is the value of ``mlx_name`` when the user set it, ``""`` when ``own_name``
    opts out, else None; ``setting`` is ``own_name``'s stripped value."""
    if mlx_name in os.environ:
        return os.environ[mlx_name], ""
    setting = os.environ.get(own_name, "").strip()
    return ("" if setting.lower() in _OPT_OUT else None), setting


def keep_kernel_cache() -> str:
    """Keep the CUDA kernels MLX compiles between runs: point ``MLX_PTX_CACHE_DIR`` at
    ``$XDG_CACHE_HOME/mlxvision/mlx-VERSION/ptx`` (``~/.cache/...``) unless it is set.

    MLX's CUDA backend compiles each new kernel at its first use (a new model's first compiled
    step: minutes) and caches it in a folder of the system's temporary directory, which is
    emptied at reboot and on many machines between jobs. A run in a later process, or after a
    reboot, then starts in seconds. ``MLXVISION_KERNEL_CACHE=default`` leaves MLX's choice;
    another value names the folder. Returns the folder in use (``""`` for MLX's default).
    Must run before ``mlx.core`` first compiles a kernel; ``import mlxvision`` does it.

    Example:
        >>> keep_kernel_cache() == os.environ.get("MLX_PTX_CACHE_DIR", "")
        True
    """
    decided, setting = _mlx_variable_or_setting("MLX_PTX_CACHE_DIR", "MLXVISION_KERNEL_CACHE")
    if decided is not None:
        return decided
    if setting:
        folder = Path(setting).expanduser()
    else:
        try:
            from importlib.metadata import version

            mlx_version = version("mlx")
        except Exception:  # an mlx without package metadata: one folder for all versions
            mlx_version = "unknown"
        try:
            base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        except RuntimeError:  # no home folder known: leave MLX's default
            return ""
        folder = Path(base) / "mlxvision" / f"mlx-{mlx_version}" / "ptx"
    os.environ["MLX_PTX_CACHE_DIR"] = str(folder)
    return str(folder)


def compiled_kernel_folder(gpu: bool) -> Path:
    """Where MLX keeps the kernels it compiles in this process: on CUDA ``MLX_PTX_CACHE_DIR``
    (see :func:`keep_kernel_cache`) or ``TMP/mlx/VERSION/ptx``; on the CPU, where
    ``mx.compile`` builds C++ libraries, ``TMP/mlx/VERSION/cpu`` (``TMP`` is ``TMPDIR`` or the
    system's temporary folder).

    Example:
        >>> compiled_kernel_folder(gpu=False).parts[-1]
        'cpu'
    """
    import tempfile

    import mlx.core as mx

    if gpu and os.environ.get("MLX_PTX_CACHE_DIR"):
        return Path(os.environ["MLX_PTX_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "mlx" / mx.__version__ / ("ptx" if gpu else "cpu")


CUDA_OPS_PER_GRAPH = 3
CUDA_EVAL_WIDTH = 1


def _set_mlx_number(mlx_name: str, own_name: str, ours: int) -> str:
    """Set MLX's variable ``mlx_name`` to ``ours`` unless the user set it; ``own_name`` set
    to ``default`` leaves MLX's value, to a number sets that. Returns the value in use
    (``""`` for MLX's default)."""
    decided, setting = _mlx_variable_or_setting(mlx_name, own_name)
    if decided is not None:
        return decided
    if setting and not setting.isdigit():
        raise ValueError(f"{own_name}: expected a positive number or 'default', got {setting!r}")
    os.environ[mlx_name] = setting or str(ours)
    return os.environ[mlx_name]


def tune_cuda_graphs() -> str:
    """On MLX's CUDA backend, launch kernels one by one instead of in CUDA graphs
    (``MLX_USE_CUDA_GRAPHS=0``), commit them to the GPU every :data:`CUDA_OPS_PER_GRAPH`
    operations (``MLX_MAX_OPS_PER_BUFFER``) instead of MLX's 20, and evaluate the graph
    depth first (``MLX_BFS_MAX_WIDTH`` = :data:`CUDA_EVAL_WIDTH` instead of 20); a variable the
    user set stays. ``MLXVISION_DIRECT_LAUNCH=default`` keeps MLX's CUDA graphs;
    ``MLXVISION_CUDA_GRAPH_OPS`` and ``MLXVISION_EVAL_WIDTH`` ``=default`` leave MLX's 20, a
    number sets it.

    Measured on an H200 (``benchmarks/results/gpu_throughput.md``, bf16, batch 512, separate
    processes alternated), ResNet-18 training: MLX's defaults 22.8-26.2k images/s; graphs of
    3 operations 33.0-33.5k (38.4-38.6k with this version's batch norm); direct launches
    every 3 operations 43.1-47.0k (46.0k with the fused batch norm and ReLU, PyTorch's rate).
    Committing more operations at a time holds more memory, since MLX frees a commit's inputs
    once the GPU has run all of it: 1,357 / 1,453 / 1,496 MB for 1 / 2 / 3 operations, at
    44.1 / 44.6 / 46.0k images/s (PyTorch: 1,348 MB). The evaluation order moves the peak as
    well: a width of 1 gave 1,350-1,376 MB against 1,529 for MLX's 20 at the same speed
    (ResNet-50 at 224 px: 6,096 against 6,310 MB; VGG-11: 2,620 against 2,429). MLX reads these
    variables at its first GPU evaluation, so this must run before it; ``import mlxvision``
    does. Returns the commit size in use (``""`` for MLX's default). Metal and the CPU are left
    alone.

    Example:
        >>> tune_cuda_graphs() == os.environ.get("MLX_MAX_OPS_PER_BUFFER", "")
        True
    """
    import mlx.core as mx

    if not mx.cuda.is_available():
        return os.environ.get("MLX_MAX_OPS_PER_BUFFER", "")
    decided, _ = _mlx_variable_or_setting("MLX_USE_CUDA_GRAPHS", "MLXVISION_DIRECT_LAUNCH")
    if decided is None:
        os.environ["MLX_USE_CUDA_GRAPHS"] = "0"
    _set_mlx_number("MLX_BFS_MAX_WIDTH", "MLXVISION_EVAL_WIDTH", CUDA_EVAL_WIDTH)
    return _set_mlx_number("MLX_MAX_OPS_PER_BUFFER", "MLXVISION_CUDA_GRAPH_OPS", CUDA_OPS_PER_GRAPH)


MALLOC = {"kept": False, "reason": "not checked yet"}


def tune_malloc() -> dict:
    """On Linux, let glibc keep freed memory for reuse (``mlxvision.ops.keep_freed_memory``):
    MLX's CPU backend frees and re-allocates large buffers every step, and page-faulting them in
    anew cost several times the arithmetic. ``MLXVISION_MALLOC=default`` opts out.

    Example:
        >>> tune_malloc()["reason"] != ""
        True
    """
    if MALLOC["reason"] != "not checked yet":
        return MALLOC
    if os.environ.get("MLXVISION_MALLOC", "").strip().lower() in _OPT_OUT:
        MALLOC.update(kept=False, reason="turned off by MLXVISION_MALLOC")
    elif platform.system() != "Linux":
        MALLOC.update(kept=False, reason=f"not needed on {platform.system()}")
    else:
        from .ops.malloc import keep_freed_memory

        kept = keep_freed_memory()
        MALLOC.update(kept=kept, reason="glibc keeps freed memory" if kept else "no mallopt")
    return MALLOC


def cpu_name() -> str:
    """The processor's model name (Linux: ``/proc/cpuinfo``), else what ``platform`` knows.

    Example:
        >>> cpu_name() != ""
        True
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> dict[str, str]:
    """What mlxvision runs on: versions, MLX's default device and the BLAS in use.

    Example:
        >>> sorted(info())[:3]
        ['blas', 'blas_reason', 'compile_steps']
    """
    mx = import_mlx()
    from ._version import __version__

    return {
        "mlxvision": __version__,
        "mlx": mx.__version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "device": str(mx.default_device()),
        "blas": BLAS.library or "MLX's own",
        "blas_reason": BLAS.reason,
        "malloc": MALLOC["reason"],
        "kernel_cache": os.environ.get("MLX_PTX_CACHE_DIR", "MLX's default (temporary folder)"),
        "cuda_graph_ops": os.environ.get("MLX_MAX_OPS_PER_BUFFER", "MLX's default"),
        "cuda_graphs": os.environ.get("MLX_USE_CUDA_GRAPHS", "MLX's default"),
        "eval_width": os.environ.get("MLX_BFS_MAX_WIDTH", "MLX's default"),
        "compile_steps": "yes" if compile_by_default() else "no (CPU: measured no faster)",
        "native_conv": _native_conv_status(),
    }


def _native_conv_status() -> str:
    """On the CPU, whether convolutions use :mod:`mlxvision.native` (building it if needed)."""
    if not on_cpu():
        return "not used off the CPU"
    from .native import native_status, onednn_conv

    onednn_conv()
    return native_status()


def available_cores() -> int:
    """The CPU cores this process may run on.

    Example:
        >>> available_cores() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def on_cpu() -> bool:
    """Whether MLX computes on the CPU (its default device).

    Example:
        >>> import mlx.core as mx
        >>> on_cpu() == (mx.default_device() == mx.cpu)
        True
    """
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.cpu


def on_cuda() -> bool:
    """Whether MLX computes on a GPU through its CUDA backend.

    Example:
        >>> import mlx.core as mx
        >>> on_cuda() == (not on_cpu() and mx.cuda.is_available())
        True
    """
    import mlx.core as mx

    return not on_cpu() and mx.cuda.is_available()


def compile_by_default() -> bool:
    """Whether training and evaluation steps are compiled when not told: on GPUs, not on CPUs.

    On MLX's CPU backend a compiled step measured 0.75-1.06× the speed of an uncompiled one for
    training (0.5-0.8× for evaluation) while its first call spends seconds to minutes compiling
    C++ (``benchmarks/README.md``); on GPUs compiling fuses kernels and pays off.

    Example:
        >>> compile_by_default() in (True, False)
        True
    """
    return not on_cpu()
