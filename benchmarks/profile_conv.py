"""Milliseconds per convolution layer of the CIFAR models: mx.conv2d against lowerings to matmuls.

For every distinct convolution of ResNet-20, ResNet-18 (CIFAR stem) and the tutorial CNN
(``simple_cnn``) at a given batch size, this times each pass alone, each way
(``mlxvision.ops.conv``'s passes; see its docstring):

- forward ``fwd``: ``mlx`` (:func:`mlx.core.conv2d`), ``im2col`` (one strided view of the padded
  input copied to a patches matrix, one matmul), ``rows`` (stride 1: a matmul per tap on
  shifted rows of the padded input, accumulated), ``shift`` (``Σ_ij x_shift_ij @ w_ij``, no
  patches matrix; with ``--all``);
- input gradient ``dx``: ``mlx`` (MLX's own), ``col2im`` (``dY·W``, added back per stride
  phase), ``subpixel`` (one stride-1 ``mx.conv2d`` per stride phase), ``rows`` (stride 1:
  the transposed convolution as the ``rows`` forward), ``tconv`` (stride 1:
  an im2col convolution of the padded ``dY`` with the flipped kernel; with ``--all``);
- weight gradient ``dw``: ``mlx``, ``matmul`` (``dYᵀ·P``), ``rows`` (stride 1: per tap, ``dYᵀ``
  times shifted rows);

and the whole forward + backward (``mx.vjp``, both gradients), uncompiled and compiled, for
``mlx``, ``auto`` (``mlxvision.ops.conv2d(method="auto")``: the plan of ``choose_plan``) and,
with ``--all``, ``im2col`` (every pass lowered) and ``im2col-ad`` (the im2col forward
differentiated by MLX's autodiff: strided slices scatter into zeros).

Rounds are interleaved (every candidate once per round); each cell is the median over rounds.
The last table sums each model's layers (shape × number of layers with it). By default glibc is
told to keep freed memory (``mlxvision.ops.keep_freed_memory``; ``--malloc default`` not).
Usage::

    python benchmarks/profile_conv.py [--batch-size 128] [--repeats 3] [--all]
        [--models simple_cnn,resnet20,resnet18] [--no-compile] [--malloc keep|default]
        [--dtype float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

import mlxvision
from mlxvision.ops import conv as C
from mlxvision.ops import keep_freed_memory

mx = mlxvision.import_mlx()  # after mlxvision: it loads the fast BLAS before mlx.core


def fastnet_shapes(w1: int, w2: int, w3: int) -> dict[tuple[int, int, int, int, int], int]:
    """The speed recipe's network (airbench layout): a 2×2 whitening convolution to 24
    channels, then per block a convolution before and after a 2×2 pooling."""
    layers = [
        (3, 24, 2, 1, 32),
        (24, w1, 3, 1, 31),
        (w1, w1, 3, 1, 15),
        (w1, w2, 3, 1, 15),
        (w2, w2, 3, 1, 7),
        (w2, w3, 3, 1, 7),
        (w3, w3, 3, 1, 3),
    ]
    return dict(Counter(layers))


# (in, out, kernel, stride, size) -> number of layers of this shape, per model.
SHAPES: dict[str, dict[tuple[int, int, int, int, int], int]] = {
    "simple_cnn": {(3, 64, 3, 1, 32): 1, (64, 128, 3, 1, 16): 1},
    "resnet20": {
        (3, 16, 3, 1, 32): 1,
        (16, 16, 3, 1, 32): 6,
        (16, 32, 3, 2, 32): 1,
        (32, 32, 3, 1, 16): 5,
        (32, 64, 3, 2, 16): 1,
        (64, 64, 3, 1, 8): 5,
    },
    "resnet18": {
        (3, 64, 3, 1, 32): 1,
        (64, 64, 3, 1, 32): 4,
        (64, 128, 3, 2, 32): 1,
        (64, 128, 1, 2, 32): 1,
        (128, 128, 3, 1, 16): 3,
        (128, 256, 3, 2, 16): 1,
        (128, 256, 1, 2, 16): 1,
        (256, 256, 3, 1, 8): 3,
        (256, 512, 3, 2, 8): 1,
        (256, 512, 1, 2, 8): 1,
        (512, 512, 3, 1, 4): 3,
    },
    "fastnet32": fastnet_shapes(32, 64, 64),  # the CPU recipe's first widths
    "fastnet48": fastnet_shapes(48, 96, 96),  # cifar10_fast_cpu
}


def shifted_matmuls(x: mx.array, w: mx.array, stride: int, padding: int) -> mx.array:
    """Candidate (c): ``Σ_ij x_shift_ij @ w_ij``, no patches matrix."""
    x = C._pad(x, (padding, padding))
    _, kh, kw, cin = w.shape
    n = x.shape[0]
    ho, wo = C._out_size(x.shape[1], kh, stride), C._out_size(x.shape[2], kw, stride)
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = x[
                :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
            ]
            term = tap.reshape(-1, cin) @ w[:, i, j, :].T
            out = term if out is None else out + term
    return out.reshape(n, ho, wo, -1)


def im2col_autodiff(x: mx.array, w: mx.array, stride: int, padding: int) -> mx.array:
    """Candidate (a) with MLX's autodiff for the gradient (strided slices scatter into zeros)."""
    x = C._pad(x, (padding, padding))
    n, h, wd, c = x.shape
    k = w.shape[1]
    ho, wo = C._out_size(h, k, stride), C._out_size(wd, k, stride)
    taps = [
        x[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
        for i in range(k)
        for j in range(k)
    ]
    cols = taps[0] if len(taps) == 1 else mx.concatenate(taps, axis=-1)
    return (cols.reshape(-1, k * k * c) @ w.reshape(w.shape[0], -1).T).reshape(n, ho, wo, -1)


def transposed_conv_input_grad(w: mx.array, dy: mx.array, padding: int) -> mx.array:
    """Stride-1 input gradient as an im2col convolution of the padded dY, flipped kernel."""
    pad = w.shape[1] - 1 - padding
    flipped = w[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)
    return C._forward(dy, flipped, (1, 1), (pad, pad), "im2col")


def pass_candidates(k: int, s: int, p: int, every: bool) -> dict[tuple[str, str], Callable]:
    """(pass, name) -> fn(x, w, dy): the single passes."""
    st, pd = (s, s), (p, p)
    found = {}
    for how in ("mlx", "im2col") + (("rows",) if s == 1 else ()):
        found[("fwd", how)] = lambda x, w, g, how=how: C._forward(x, w, st, pd, how)
    if every and k > 1:
        found[("fwd", "shift")] = lambda x, w, g: shifted_matmuls(x, w, s, p)
    for how in ("mlx", "col2im", "subpixel") + (("rows",) if s == 1 and p < k else ()):
        found[("dx", how)] = lambda x, w, g, how=how: C._input_grad(x, w, g, st, pd, how)
    if every and k > 1 and s == 1:
        found[("dx", "tconv")] = lambda x, w, g: transposed_conv_input_grad(w, g, p)
    for how in ("mlx", "matmul") + (("rows",) if s == 1 else ()):
        found[("dw", how)] = lambda x, w, g, how=how: C._weight_grad(x, w, g, st, pd, how)
    return found


def full_candidates(k: int, s: int, p: int, every: bool) -> dict[str, Callable]:
    """name -> conv(x, w): whole convolutions, differentiated by mx.vjp."""
    found = {
        "mlx": lambda x, w: mx.conv2d(x, w, s, p),
        "im2col-ad": lambda x, w: im2col_autodiff(x, w, s, p),
        "im2col": lambda x, w: C.conv2d(x, w, s, p, method="im2col"),
        "auto": lambda x, w: C.conv2d(x, w, s, p, method="auto"),
    }
    if not every:
        del found["im2col-ad"], found["im2col"]
    return found


def vjp_runner(conv: Callable, compiled: bool) -> Callable:
    def run(x, w, g):
        out, grads = mx.vjp(conv, [x, w], [g])
        return out[0], grads[0], grads[1]

    return mx.compile(run) if compiled else run


def time_call(fn: Callable, args: tuple, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        mx.eval(fn(*args))
    return (time.perf_counter() - start) / inner * 1e3


def profile_shape(
    shape, batch: int, repeats: int, inner: int, compile_too: bool, every: bool, dtype: mx.Dtype
) -> dict:
    cin, cout, k, s, size = shape
    p = 1 if k == 3 else 0
    x = mx.random.normal((batch, size, size, cin)).astype(dtype)
    w = (mx.random.normal((cout, k, k, cin)) * 0.1).astype(dtype)
    ho = (size + 2 * p - k) // s + 1
    g = mx.random.normal((batch, ho, ho, cout)).astype(dtype)
    mx.eval(x, w, g)
    runners = dict(pass_candidates(k, s, p, every))
    for name, conv in full_candidates(k, s, p, every).items():
        for compiled in (False, True) if compile_too else (False,):
            runners[("fwd+bwd" + (" compiled" if compiled else ""), name)] = vjp_runner(
                conv, compiled
            )
    for fn in runners.values():
        mx.eval(fn(x, w, g))  # warm-up (and compilation)
    samples: dict = {key: [] for key in runners}
    for _ in range(repeats):
        for key, fn in runners.items():
            samples[key].append(time_call(fn, (x, w, g), inner))
    return {key: statistics.median(v) for key, v in samples.items()}


COLUMNS = {
    "fwd": ("mlx", "im2col", "rows", "shift"),
    "dx": ("mlx", "col2im", "subpixel", "rows", "tconv"),
    "dw": ("mlx", "matmul", "rows"),
    "fwd+bwd": ("mlx", "im2col-ad", "im2col", "auto"),
    "fwd+bwd compiled": ("mlx", "im2col-ad", "im2col", "auto"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inner", type=int, default=1, help="calls per timed sample")
    parser.add_argument("--models", default="simple_cnn,resnet20,resnet18")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    parser.add_argument(
        "--all",
        action="store_true",
        help="also the losing candidates: shift, tconv, im2col-ad and im2col (every pass lowered)",
    )
    parser.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc keeps freed memory (mlxvision.ops.keep_freed_memory); default: as is",
    )
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    args = parser.parse_args(argv)
    dtype = getattr(mx, args.dtype)
    kept = args.malloc == "keep" and keep_freed_memory()

    models = args.models.split(",")
    for model in models:
        if model not in SHAPES:
            parser.error(f"--models: unknown model {model!r}; known: {', '.join(SHAPES)}")
    shapes = list(dict.fromkeys(shape for model in models for shape in SHAPES[model]))

    info = mlxvision.info()
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"mlx {info['mlx']}, mlxvision {info['mlxvision']}, {info['platform']}, "
        f"device {info['device']}, BLAS {info['blas']}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, malloc keeps freed memory: {kept}, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(
        f"batch {args.batch_size}, {args.dtype}, ms per call, "
        f"median of {args.repeats} interleaved rounds\n"
    )
    losers = () if args.all else ("shift", "tconv", "im2col-ad")
    full_losers = () if args.all else ("im2col",)  # every pass lowered
    columns = {
        g: tuple(
            n for n in names if n not in losers and not (g.startswith("fwd+") and n in full_losers)
        )
        for g, names in COLUMNS.items()
    }
    groups = [g for g in columns if not (args.no_compile and "compiled" in g)]
    header = [f"{g}: {n}" for g in groups for n in columns[g]]
    print("| in→out | k/s | size | " + " | ".join(header) + " |")
    print("|---" * (3 + len(header)) + "|")
    results = {}
    for shape in shapes:
        result = profile_shape(
            shape, args.batch_size, args.repeats, args.inner, not args.no_compile, args.all, dtype
        )
        results[shape] = result
        cin, cout, k, s, size = shape
        cells = [
            f"{result[(g, n)]:.3g}" if (g, n) in result else "–" for g in groups for n in columns[g]
        ]
        print(f"| {cin}→{cout} | {k}/{s} | {size} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}\n")
    print("Sum over each model's convolution layers (ms per batch, forward + backward):\n")
    names = columns["fwd+bwd"]
    full = [g for g in groups if g.startswith("fwd+bwd")]
    print("| model | " + " | ".join(f"{g}: {n}" for g in full for n in names) + " | auto vs mlx |")
    print("|---" * (2 + len(full) * len(names)) + "|")
    for model in models:
        totals = {
            (g, n): sum(c * results[sh][(g, n)] for sh, c in SHAPES[model].items())
            for g in full
            for n in names
        }
        ratio = totals[("fwd+bwd", "mlx")] / totals[("fwd+bwd", "auto")]
        print(
            f"| {model} | "
            + " | ".join(f"{totals[(g, n)]:.3g}" for g in full for n in names)
            + f" | {ratio:.2f}× |"
        )


if __name__ == "__main__":
    main()
