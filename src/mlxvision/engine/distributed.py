"""Data-parallel training on ``mx.distributed`` (ring over TCP, MPI, NCCL on CUDA).

Start a script on several processes with MLX's launcher, for example two on this machine::

    mlx.launch -n 2 --backend ring python train.py

Each process trains on its shard of every batch (``DataLoader(..., rank=, world_size=)``);
gradients are averaged across processes in few large messages before every update, so all
processes keep the same weights. See ``Trainer(distributed=True)``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import zlib
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from .streams import available_cores, running_statistics, share_cores_with_blas


def init(backend: str = "any") -> mx.distributed.Group:
    """The group of all processes of this job (a group of one when not launched distributed).

    Example:
        >>> init().size() >= 1
        True
    """
    return mx.distributed.init(backend=backend)


def local_processes(group: mx.distributed.Group) -> int:
    """How many processes of the group run on this machine (same host name), this one included.

    Example:
        >>> local_processes(init())
        1
    """
    if group.size() == 1:
        return 1
    name = zlib.crc32(socket.gethostname().encode()) & 0x7FFFFFFF
    names = mx.distributed.all_gather(mx.array([name], dtype=mx.int32), group=group)
    return int((names == name).sum().item())


def cores_per_process(group: mx.distributed.Group | None) -> int:
    """This process's share of the machine's cores: available cores over the group's processes
    on this machine (a collective call when the group has several processes).

    Example:
        >>> cores_per_process(None) == available_cores()
        True
    """
    local = local_processes(group) if group is not None else 1
    return max(1, available_cores() // local)


def share_cpu_cores(group: mx.distributed.Group) -> int:
    """Give each of this machine's processes an equal share of its cores for BLAS; return the
    threads per process (0: nothing changed).

    With MLX on a CPU, every process would otherwise run the BLAS on all cores: two processes on
    two cores then run four busy threads. Applies when the group has several processes on this
    machine, MLX computes on the CPU and ``OPENBLAS_NUM_THREADS`` is not set. A training step
    does this itself (:class:`~mlxvision.engine.steps.TrainStep`, with its streams).

    Example:
        >>> share_cpu_cores(init())  # a group of one: nothing to share
        0
    """
    if group.size() == 1:
        return 0
    return share_cores_with_blas(1, cores_per_process(group))


def average_gradients(grads: Any, group: mx.distributed.Group) -> Any:
    """Mean of each gradient over the group, sent in messages of up to 32 MiB.

    Example:
        >>> g = {"w": mx.ones(3)}
        >>> average_gradients(g, init())["w"].tolist()
        [1.0, 1.0, 1.0]
    """
    return nn.utils.average_gradients(grads, group=group)


def all_mean(tree: Any, group: mx.distributed.Group) -> Any:
    """The element-wise mean of a tree of arrays over the group.

    Example:
        >>> all_mean({"x": mx.array([2.0])}, init())["x"].item()
        2.0
    """
    if group.size() == 1:
        return tree
    return tree_map(lambda a: mx.distributed.all_sum(a, group=group) / group.size(), tree)


def all_sum_numbers(values: list[float], group: mx.distributed.Group) -> list[float]:
    """Sum plain numbers over the group (a host-side reduction, for metrics).

    Example:
        >>> all_sum_numbers([1.0, 2.0], init())
        [1.0, 2.0]
    """
    if group.size() == 1:
        return list(values)
    summed = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=group)
    return [float(v) for v in summed.tolist()]


def sync_batch_norm_statistics(model: nn.Module, group: mx.distributed.Group) -> None:
    """Average BatchNorm running statistics over the group, so every process holds one model.

    During a step each process normalizes with its own shard's batch statistics (as PyTorch's
    DDP without SyncBatchNorm); averaging the running statistics at the end of each epoch keeps
    every process's evaluation and checkpoints identical.

    Example:
        >>> model = nn.BatchNorm(3)
        >>> model(mx.random.normal((8, 3)) + 5.0).shape  # training mode: statistics move
        (8, 3)
        >>> sync_batch_norm_statistics(model, init())  # a group of one: nothing to average
        >>> bool((model.running_mean > 0).all())
        True
    """
    if group.size() == 1:
        return
    stats = running_statistics(model)
    if stats:
        averaged = all_mean(stats, group)
        model.update(tree_unflatten(list(averaged.items())))
        mx.eval(model.parameters())


def check_same_weights(model: nn.Module, group: mx.distributed.Group) -> None:
    """Raise if the processes start from different weights (for example, unseeded init).

    Example:
        >>> check_same_weights(nn.Linear(2, 2), init())
    """
    if group.size() == 1:
        return
    flat = [v.reshape(-1).astype(mx.float32) for _, v in tree_flatten(model.parameters())]
    local = mx.concatenate([mx.array([x.sum().item(), (x * x).sum().item()]) for x in flat])
    mean = mx.distributed.all_sum(local, group=group) / group.size()
    if not mx.allclose(local, mean, rtol=1e-6, atol=1e-6).item():
        raise RuntimeError(
            f"rank {group.rank()}: the processes start from different weights; seed MLX the "
            "same way on every process before building the model (mx.random.seed), or load the "
            "same checkpoint everywhere"
        )


class Watchdog:
    """Ends this process with a clear message if training makes no progress for ``timeout`` s.

    A collective operation waits for every process; when one process dies, the others could
    wait forever. The trainer pets the watchdog at every host read; if none comes for
    ``timeout`` seconds the process prints which rank stalled and exits with status 3.

    Example:
        >>> watchdog = Watchdog(rank=0, timeout=600.0)
        >>> watchdog.pet()  # at every sign of progress
        >>> watchdog.stop()  # when training ends
        >>> watchdog.thread.join(timeout=10)
        >>> watchdog.thread.is_alive()
        False
    """

    def __init__(self, rank: int, timeout: float) -> None:
        self.rank = rank
        self.timeout = float(timeout)
        self.last = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def pet(self) -> None:
        """Record progress now: the ``timeout`` starts again."""
        self.last = time.monotonic()

    def stop(self) -> None:
        """Stop watching (the watching thread ends within a few seconds)."""
        self.stopped.set()

    def _watch(self) -> None:
        while not self.stopped.wait(min(5.0, self.timeout / 4)):
            if time.monotonic() - self.last > self.timeout:
                print(
                    f"mlxvision: rank {self.rank}: no training progress for {self.timeout:.0f} s; "
                    "another process of the job has probably died. Stopping; the last complete "
                    "checkpoint is intact.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(3)
