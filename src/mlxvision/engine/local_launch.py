"""Start a data-parallel job as several processes on this machine (MLX's ring backend).

MLX's CPU backend runs everything but the matrix products on one thread, so one training process
leaves cores idle; several processes, each with its share of the cores and of every batch,
use them all. ``mlx.launch`` starts such jobs too, but it relays each process's output through
a loop that never blocks, which costs a whole core on a small machine; here the processes
write to the terminal themselves.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports on 127.0.0.1 that were free a moment ago.

    Example:
        >>> ports = free_ports(2)
        >>> len(set(ports)), all(1024 <= p < 65536 for p in ports)
        (2, True)
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local(command: Sequence[str], processes: int, poll_seconds: float = 0.2) -> int:
    """Run ``command`` as ``processes`` ranks of one ``mx.distributed`` ring job on 127.0.0.1;
    return 0 when every rank succeeded, else the first failing rank's exit status.

    Each rank gets ``MLX_RANK`` and ``MLX_HOSTFILE`` (what ``mx.distributed.init()`` reads) and
    inherits this process's output. When a rank fails, the others are stopped.

    Example:
        >>> code = "import mlx.core as mx; g = mx.distributed.init(); assert g.size() == 2"
        >>> launch_local([sys.executable, "-c", code], processes=2)
        0
    """
    if processes < 1:
        raise ValueError(f"processes: expected a positive int, got {processes}")
    if processes == 1:
        return subprocess.run(list(command)).returncode
    with tempfile.TemporaryDirectory(prefix="mlxvision-ring-") as folder:
        hostfile = os.path.join(folder, "hosts.json")
        with open(hostfile, "w") as f:
            json.dump([[f"127.0.0.1:{port}"] for port in free_ports(processes)], f)
        ranks = [
            subprocess.Popen(
                list(command), env={**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": hostfile}
            )
            for r in range(processes)
        ]
        try:
            while True:
                codes = [p.poll() for p in ranks]
                failed = [c for c in codes if c not in (None, 0)]
                if failed:
                    return _stop(ranks, failed[0])
                if all(c == 0 for c in codes):
                    return 0
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            return _stop(ranks, 130)


def _stop(ranks: list[subprocess.Popen], code: int) -> int:
    for p in ranks:
        if p.poll() is None:
            p.terminate()
    for p in ranks:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    print(f"mlxvision: a process of the job exited with status {code}", file=sys.stderr)
    return code
