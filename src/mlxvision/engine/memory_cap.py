"""Cap a training run's memory at its step's working set.

MLX frees a buffer once the device has run the work that used it, and the host launches work
ahead of the device, so a step's peak holds, besides what the step needs at once (its working
set), buffers it no longer needs. On an H200, ResNet-18's bf16 step at batch 512 with MLX's
optimizer update (``MLXVISION_LEAN_UPDATES=0``) needs 1,303 MB and peaks at 1,372 MB.
``mx.set_memory_limit`` makes MLX wait for the device whenever more than the limit is in use;
a limit at the working set plus a little keeps the peak there, at some speed: with
:class:`MemoryCap`'s 3%, that step peaked at 1,345–1,351 MB (PyTorch: 1,348) at 0.90–0.92×
PyTorch's speed, against 1,372–1,376 MB at 0.95–0.98× without. With the default lean
updates it peaks at 1,341–1,343 MB uncapped, and 1,342 MB capped
(``benchmarks/results/gpu_throughput.md``).

:func:`working_set` measures a step's working set by running it with a limit of zero (MLX then
lets no work wait in flight); :class:`MemoryCap` does that on a run's second step and keeps
the rest of the run under the working set plus ``slack``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mlx.core as mx

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

MB = 1024 * 1024
DEFAULT_SLACK = 0.03


def working_set(run_step: Callable[[], Any]) -> int:
    """Bytes in use at once while ``run_step()`` evaluates one step, with nothing in flight
    beyond it. ``run_step`` must evaluate what it computes (``mx.eval``); the memory limit in
    force before the call is restored.

    Example:
        >>> x = mx.ones((256, 256))
        >>> working_set(lambda: mx.eval(x @ x)) >= x.nbytes
        True
    """
    mx.synchronize()
    previous = mx.set_memory_limit(0)
    try:
        mx.reset_peak_memory()
        run_step()
        mx.synchronize()
        return mx.get_peak_memory()
    finally:
        mx.set_memory_limit(previous)


def limit_for(working_set_bytes: int, slack: float = DEFAULT_SLACK) -> int:
    """The memory limit that holds a step to ``working_set_bytes`` plus ``slack`` (a fraction).

    Example:
        >>> limit_for(1000, 0.03)
        1030
    """
    return int(working_set_bytes * (1 + slack))


class MemoryCap(Callback):
    """Hold training at its working set: measure the working set on the run's second step
    (the first compiles) with :func:`working_set`'s method, then set MLX's memory limit to it
    plus ``slack`` (a fraction) until the run ends, when the earlier limit comes back.

    The updates are the same as without the cap; only when the host waits for the device
    changes. Validation inside the run is held by the same limit. ``cap_bytes`` and
    ``working_set_bytes`` hold what was measured. The measured step runs with nothing in
    flight, so it is slower than the others.

    Example:
        >>> cap = MemoryCap(slack=0.03)
        >>> cap.cap_bytes is None
        True
    """

    def __init__(self, slack: float = DEFAULT_SLACK) -> None:
        if not 0 <= slack < 1:
            raise ValueError(f"slack: expected a fraction in [0, 1), got {slack}")
        self.slack = float(slack)
        self.working_set_bytes: int | None = None
        self.cap_bytes: int | None = None
        self._previous: int | None = None
        self._measuring_after: int | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self._measuring_after = trainer.global_step + 1

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.global_step == self._measuring_after:
            mx.synchronize()
            self._previous = mx.set_memory_limit(0)
            mx.reset_peak_memory()
        elif trainer.global_step == self._measuring_after + 1 and self._previous is not None:
            mx.synchronize()
            self.working_set_bytes = mx.get_peak_memory()
            self.cap_bytes = limit_for(self.working_set_bytes, self.slack)
            mx.set_memory_limit(self.cap_bytes)
            trainer.log(
                f"MemoryCap: working set {self.working_set_bytes / MB:,.0f} MB, "
                f"memory limit {self.cap_bytes / MB:,.0f} MB"
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._previous is not None:
            mx.set_memory_limit(self._previous)
            self._previous = None
