"""Keep freed memory in the process, so that MLX's CPU buffers are not page-faulted in anew.

MLX's CPU backend allocates every intermediate array with ``malloc`` and frees it after use.
glibc serves large blocks (above 128 KiB to 32 MiB, adaptively) with a fresh ``mmap`` and gives
them back with ``munmap`` on ``free``, so every large intermediate of every training step is
page-faulted in again, one 4 KiB page at a time. In virtual machines a page fault is expensive:
on a 2-core Linux VM an elementwise op on a 300 MB array ran at 0.6 GB/s, and at 4–6 GB/s once
glibc kept its freed memory (see ``benchmarks/README.md``).

:func:`keep_freed_memory` raises glibc's mmap threshold and turns off trimming of the heap's top
(``mallopt``), so that large blocks come from the heap and freed ones are reused. A trim
threshold, however high, is not enough: a training step at batch 1000 frees more than 2 GiB at
the heap's top, glibc gives it back, and the next step faults it in again (0.8 million page
faults, 4 of the 7 seconds of a step of the CPU speed recipe). The cost: the process keeps its
peak heap size instead of returning freed memory to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the (reused) heap
MALLOPT_MAX = 2**31 - 1  # mallopt takes an int
NEVER_TRIM = -1  # glibc: a trim threshold of -1 turns trimming off


def keep_freed_memory(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Make glibc reuse freed blocks up to ``mmap_threshold`` bytes; return whether it applied.

    Does nothing (and returns ``False``) on systems without glibc's ``mallopt`` (macOS,
    musl). Affects the whole process, every library in it included.

    Example:
        >>> keep_freed_memory() in (True, False)
        True
    """
    if not 0 < mmap_threshold <= MALLOPT_MAX:
        raise ValueError(
            f"keep_freed_memory: mmap_threshold must be in (0, {MALLOPT_MAX}] bytes, "
            f"got {mmap_threshold}"
        )
    if platform.system() != "Linux":
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    return applied and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
