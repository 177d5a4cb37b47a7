"""keep_freed_memory, checked by its effect: page faults when large freed blocks are reused.

Each case runs in a fresh interpreter, since glibc's settings are per process and cannot be
undone. The child allocates ``BLOCKS`` blocks of ``BLOCK_MIB`` MiB, writes them, frees them all
(more than 2 GiB leaves the heap's top at once, as a training step at batch 1000 does), then
allocates and writes them again, and reports the minor page faults of that second round.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory tunes glibc's malloc",
)

BLOCK_MIB = 512
BLOCKS = 5  # 2.5 GiB in all
PAGES = BLOCKS * BLOCK_MIB * 2**20 // 4096

CHILD = f"""
import ctypes, json, resource, sys
if sys.argv[1] == "keep":
    from mlxvision.ops.malloc import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = {BLOCK_MIB} * 2**20

def round_trip():
    blocks = [libc.malloc(size) for _ in range({BLOCKS})]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)

round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(json.dumps({{"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
"""


def second_round_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["faults"]


def test_freed_blocks_are_reused_without_page_faults():
    default = second_round_faults("default")
    kept = second_round_faults("keep")
    # glibc's default maps each block anew: every page faults again.
    assert default > 0.9 * PAGES, (default, PAGES)
    # Kept: the blocks come back from the heap, already faulted in (a few pages of slack).
    assert kept < 0.02 * PAGES, (kept, PAGES)
