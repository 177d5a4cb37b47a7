"""2-D convolution for MLX's CPU backend: each pass by whichever of MLX's convolution and a
lowering to matrix products measured faster.

MLX's CPU convolution computes the input gradient of strided convolutions in a naive loop, 10 to
60 times slower than the rest of the layer. The passes of a convolution of an NHWC input ``x``
with an OHWI weight ``w`` (``k×k``, ``C`` in, ``O`` out) can each be computed another way:

- forward ``"im2col"``: the patches matrix ``P`` (one row per output pixel, ``k·k·C`` columns:
  one strided view of the padded input, copied once) times ``w.reshape(O, k·k·C)ᵀ``;
  ``"rows"`` (stride 1): no patches matrix at all. With the padded input flattened to one row
  per pixel, every tap ``(i, j)`` reads the same rows shifted by ``i·W_padded + j``, a
  contiguous block; the output is ``Σ_taps rows[shift:] · w_ijᵀ``, accumulated by the BLAS
  (``mx.addmm``) on the padded grid, whose valid pixels are a strided view;
- input gradient ``"col2im"``: ``dY · w.reshape(O, k·k·C)``, added back onto the pixels one
  stride phase at a time; ``"subpixel"``: per stride phase, one stride-1 :func:`mlx.core.conv2d`
  of ``dY`` with that phase's taps of the flipped kernel (the transposed convolution split into
  stride² small ones), phases interleaved by a reshape; ``"rows"`` (stride 1): the
  transposed convolution (``dY`` padded, kernel flipped) computed as the ``"rows"`` forward;
- weight gradient ``"matmul"``: ``dYᵀ · P``; ``"conv"``: one :func:`mlx.core.conv_general` of
  the input and ``dY``, each with batch and channels swapped (``dY`` is the kernel, dilated by
  the stride). MLX's own weight gradient builds the patches matrix (about ``k·k`` times the
  input); on CUDA MLX runs this form as cuDNN's weight-gradient kernel, which needs none.

A :class:`ConvPlan` names the way for each pass; the gradients are installed with
:class:`mlx.core.custom_function`. :func:`conv2d` with ``method="auto"`` takes the plan of
:func:`choose_plan`, a rule measured with ``benchmarks/profile_conv.py``. Grouped and dilated
convolutions always use :func:`mlx.core.conv2d`, except depthwise ones on the CPU (one filter
per channel), which ``"auto"`` computes as a sum of shifted taps.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import mlx.core as mx

from ..backend import on_cpu, on_cuda
from .cuda_depthwise import depthwise_weight_grad

METHODS = ("auto", "mlx", "im2col")
ENV_SWITCH = "MLXVISION_FAST_CONV"

Pair = tuple[int, int]


class ConvPlan(NamedTuple):
    """How each pass of a convolution is computed.

    ``forward``: ``"mlx"`` (:func:`mlx.core.conv2d`), ``"im2col"`` (patches times weight) or
    ``"rows"`` (stride 1: one matrix product per tap on shifted rows, no patches);
    ``input_grad``: ``"mlx"`` (MLX's gradient of its convolution), ``"col2im"`` (``dY·W``,
    put back onto the pixels), ``"subpixel"`` (one stride-1 :func:`mlx.core.conv2d` of ``dY``
    per stride phase) or ``"rows"`` (stride 1, padding < kernel); ``weight_grad``: ``"mlx"``,
    ``"matmul"`` (``dYᵀ·P``), ``"rows"`` (stride 1: per tap, ``dYᵀ`` times shifted rows) or
    ``"conv"`` (a convolution of the transposed input with the transposed ``dY``).

    Example:
        >>> plan = ConvPlan(forward="mlx", input_grad="subpixel", weight_grad="matmul")
        >>> x, w = mx.random.normal((1, 8, 8, 3)), mx.random.normal((4, 3, 3, 3))
        >>> y = conv2d(x, w, stride=2, padding=1, method=plan)
        >>> mx.allclose(y, mx.conv2d(x, w, stride=2, padding=1), atol=1e-4).item()
        True
        >>> def loss(w):
        ...     return conv2d(x, w, stride=2, padding=1, method=plan).sum()
        >>> grad = mx.grad(loss)(w)
        >>> reference = mx.grad(lambda w: mx.conv2d(x, w, stride=2, padding=1).sum())(w)
        >>> mx.allclose(grad, reference, atol=1e-3).item()
        True
    """

    forward: str = "im2col"
    input_grad: str = "col2im"
    weight_grad: str = "matmul"


MLX_PLAN = ConvPlan("mlx", "mlx", "mlx")
LOWERED_PLAN = ConvPlan("im2col", "col2im", "matmul")
STRIDED_PLAN = ConvPlan("mlx", "col2im", "mlx")
ROWS_PLAN = ConvPlan("rows", "rows", "mlx")
CUDA_PLAN = ConvPlan("mlx", "mlx", "conv")  # cuDNN's forward, data and weight gradients
NATIVE_PLAN = ConvPlan("onednn", "onednn", "onednn")  # mlxvision.native, where it is built
ROWS_MAX_CHANNELS = 32  # "rows" passes beyond this many channels measured slower than MLX's
_PASSES = {
    "forward": ("mlx", "im2col", "rows", "onednn"),
    "input_grad": ("mlx", "col2im", "subpixel", "rows", "onednn"),
    "weight_grad": ("mlx", "matmul", "rows", "conv", "onednn"),
}


def _pair(value: int | Sequence[int], name: str) -> Pair:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


class _Nesting:
    """How many ``with`` blocks of one switch are open (the blocks nest)."""

    def __init__(self) -> None:
        self.depth = 0

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


_DISABLED = _Nesting()  # fast_conv_disabled()
_UNORDERED = _Nesting()  # unordered_conv_gradients()
_PART_STREAMS: tuple[mx.Stream, ...] = ()  # convolutions_in_parts()


def part_bounds(size: int, count: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each non-empty part when ``size`` rows are split into ``count``
    parts, the first ones larger.

    Example:
        >>> part_bounds(7, 3), part_bounds(2, 3)
        ([(0, 3), (3, 5), (5, 7)], [(0, 1), (1, 2)])
    """
    base, extra = divmod(size, count)
    bounds, start = [], 0
    for index in range(count):
        stop = start + base + (index < extra)
        if stop > start:
            bounds.append((start, stop))
        start = stop
    return bounds


@contextlib.contextmanager
def convolutions_in_parts(streams: Sequence[mx.Stream]) -> Iterator[None]:
    """Within this block, a CPU convolution traced by :func:`conv2d` splits its batch into one
    part per stream and computes each part's forward pass, input gradient and weight gradient
    on that stream; the outputs and input gradients are concatenated, the weight gradients
    summed. Everything between the convolutions still sees the whole batch, so a batch norm
    normalises with the whole batch's statistics.

    MLX runs each operation on one CPU thread, and the BLAS threads only the matrix products;
    MLX streams are threads of their own. Training with two streams, batch 128, on 2 cores
    with one BLAS thread per stream: ResNet-20 1.26× as fast, ResNet-18 (CIFAR stem) 1.22×
    (``benchmarks/results/cpu.md``).
    The results equal the whole batch's up to the rounding of the matrix products' sums.

    Example:
        >>> x, w = mx.random.normal((4, 6, 6, 2)), mx.random.normal((3, 3, 3, 2))
        >>> streams = [mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)]
        >>> with mx.stream(mx.cpu), convolutions_in_parts(streams):
        ...     y = conv2d(x, w, padding=1)
        >>> mx.allclose(y, mx.conv2d(x, w, padding=1), atol=1e-4).item()
        True
    """
    global _PART_STREAMS
    previous, _PART_STREAMS = _PART_STREAMS, tuple(streams)
    try:
        yield
    finally:
        _PART_STREAMS = previous


def fast_conv_enabled() -> bool:
    """Whether lowered convolutions are allowed: ``MLXVISION_FAST_CONV`` is not ``0`` and no
    :func:`fast_conv_disabled` block is active.

    Example:
        >>> with fast_conv_disabled():
        ...     fast_conv_enabled()
        False
    """
    if _DISABLED.depth:
        return False
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


@contextlib.contextmanager
def fast_conv_disabled() -> Iterator[None]:
    """Within this block every ``method="auto"`` convolution is :func:`mlx.core.conv2d`, and
    the layers of :func:`~mlxvision.ops.use_fast_layers` compute what MLX's own compute.

    For code that must see MLX's own primitives (no custom functions), such as exporters and
    :func:`mlx.core.export_function` traces of a model. Functions compiled inside the block
    keep the choice made while tracing.

    Example:
        >>> x, w = mx.ones((1, 4, 4, 2)), mx.ones((3, 3, 3, 2))
        >>> with fast_conv_disabled():
        ...     mx.array_equal(conv2d(x, w, padding=1), mx.conv2d(x, w, padding=1)).item()
        True
    """
    with _DISABLED.block():
        yield


def choose_plan(
    in_channels: int,
    out_channels: int,
    kernel_size: Pair,
    stride: Pair,
    device: mx.Device | mx.DeviceType | None = None,
    padding: Pair = (0, 0),
    dtype: mx.Dtype | None = None,
) -> ConvPlan:
    """The plan ``method="auto"`` uses for a convolution shape on a device.

    When :func:`fast_conv_enabled` is false, and on Metal: :data:`MLX_PLAN`.

    On CUDA: :data:`CUDA_PLAN`, MLX's forward and input gradient (cuDNN's kernels) with the
    ``"conv"`` weight gradient, which MLX runs as cuDNN's weight-gradient kernel instead of
    building the patches matrix. Measured on an H200 (``benchmarks/weight_grad_memory.py``,
    batch 512, the layers of ResNet-20 and ResNet-18): 1.2–5.6× faster in bfloat16 and
    1.2–2.2× in float32, with 1–124 MB of peak memory where MLX's needs 43–1,303 MB.
    On the CPU, for a float32 ``dtype``: :data:`NATIVE_PLAN` (oneDNN's passes) where
    :mod:`mlxvision.native` is built. Otherwise (measured with
    ``benchmarks/profile_conv.py``, batch 128, the layers of
    ResNet-20, ResNet-18 and the tutorial CNN; numbers in ``benchmarks/README.md``):

    - stride 1, k×k (k > 1): ``"rows"`` for a pass whose accumulated channels are no more
      than the channels it reduces over, at most :data:`ROWS_MAX_CHANNELS` (forward:
      ``out ≤ in ≤ 32``; input gradient: ``in ≤ out ≤ 32``, padding < kernel), else MLX's.
      ``"rows"`` measured 1.1–2.3× faster than MLX's pass there (ResNet-20's 16- and
      32-channel layers, batch 64 and 256, one and two BLAS threads), and slower where the
      output is wider than the input or at 64 channels (MLX's patches are then cheaper than
      ``"rows"``' nine passes over the accumulator). MLX's weight gradient is kept.
    - 1×1, any stride: :data:`LOWERED_PLAN` (a strided slice where the stride is not 1, and
      matrix products). For stride 1 it measured 1.2–2.1× faster forward and backward than
      MLX's convolution at MobileNetV2's and ResNet-50's 1×1 shapes (batch 4, 224 px) and
      a 64→256 layer at 8×8, batch 128; for strides above 1 MLX's input gradient is again
      the naive loop.
    - strided k×k (k > 1): :data:`STRIDED_PLAN`, MLX's forward and weight gradient with the
      ``"col2im"`` input gradient. MLX's own input gradient of a strided convolution runs a
      naive loop, 10–80× slower than the rest of the layer (5.7 s against 0.2 s for 128→256
      channels at 16×16, batch 128). ``"subpixel"`` was as fast at ≤ 64 channels, up to 1.7×
      slower above.

    Example:
        >>> choose_plan(64, 128, (3, 3), (2, 2), mx.Device(mx.gpu)) == MLX_PLAN
        True
        >>> choose_plan(64, 128, (3, 3), (2, 2), mx.cpu)
        ConvPlan(forward='mlx', input_grad='col2im', weight_grad='mlx')
        >>> choose_plan(16, 16, (3, 3), (1, 1), mx.cpu, padding=(1, 1))
        ConvPlan(forward='rows', input_grad='rows', weight_grad='mlx')
        >>> choose_plan(64, 128, (3, 3), (1, 1), mx.cpu, padding=(1, 1)) == MLX_PLAN
        True
    """
    device = mx.default_device() if device is None else device
    kind = device.type if isinstance(device, mx.Device) else device
    if not fast_conv_enabled():
        return MLX_PLAN
    if kind != mx.DeviceType.cpu:
        return CUDA_PLAN if mx.cuda.is_available() else MLX_PLAN
    if dtype is not None and dtype == mx.float32 and _native() is not None:
        return NATIVE_PLAN
    if kernel_size == (1, 1):
        return LOWERED_PLAN
    if stride == (1, 1):
        rows_forward = out_channels <= in_channels <= ROWS_MAX_CHANNELS
        fits = padding[0] < kernel_size[0] and padding[1] < kernel_size[1]
        rows_input_grad = fits and in_channels <= out_channels <= ROWS_MAX_CHANNELS
        return ConvPlan(
            "rows" if rows_forward else "mlx", "rows" if rows_input_grad else "mlx", "mlx"
        )
    return STRIDED_PLAN


def conv2d(
    x: mx.array,
    weight: mx.array,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    method: str | ConvPlan = "auto",
    inference: bool = False,
) -> mx.array:
    """:func:`mlx.core.conv2d` (NHWC input, OHWI weight), computed as ``method`` says.

    ``method``: ``"auto"`` (per shape and device, see :func:`choose_plan`; on the CPU, float32
    convolutions take :data:`NATIVE_PLAN`, oneDNN's passes, where :mod:`mlxvision.native`
    is built), ``"mlx"``
    (:func:`mlx.core.conv2d` and its own gradient), ``"im2col"`` (every pass as matrix products)
    or a :class:`ConvPlan`. Grouped or dilated convolutions run :func:`mlx.core.conv2d`, except
    that ``"auto"`` computes a depthwise one (one filter per channel) on the CPU as a sum of
    shifted taps, leaving out those that read only padding, with a written gradient (per
    stride phase at larger strides); with ``inference=True`` (no gradient expected; the
    result is the same either way) those taps run as one compiled pass. On CUDA, in training,
    a depthwise convolution keeps MLX's forward and input gradient and takes its weight
    gradient from :func:`mlxvision.ops.cuda_depthwise.depthwise_weight_grad`.

    Example:
        >>> x = mx.random.normal((2, 8, 8, 3))
        >>> w = mx.random.normal((4, 3, 3, 3))
        >>> y = conv2d(x, w, stride=2, padding=1, method="im2col")
        >>> y.shape, mx.allclose(y, mx.conv2d(x, w, 2, 1), atol=1e-4).item()
        ((2, 4, 4, 4), True)
    """
    if not isinstance(method, ConvPlan) and method not in METHODS:
        raise ValueError(f"conv2d: method must be one of {METHODS} or a ConvPlan, got {method!r}")
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            "conv2d: expected a 4-D NHWC input and a 4-D OHWI weight, "
            f"got input shape {tuple(x.shape)} and weight shape {tuple(weight.shape)}"
        )
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    dilation = _pair(dilation, "dilation")
    out_channels, kh, kw, in_channels = weight.shape
    if x.shape[-1] != in_channels * groups:
        raise ValueError(
            f"conv2d: input has {x.shape[-1]} channels, the weight {tuple(weight.shape)} "
            f"with groups={groups} expects {in_channels * groups}"
        )
    depthwise = in_channels == 1 and groups == out_channels and dilation == (1, 1)
    if depthwise and method == "auto" and fast_conv_enabled():
        if on_cpu():
            if inference:
                return _compiled_depthwise_taps(stride, padding)(x, weight)
            return _depthwise_fn(stride, padding)(x, weight)
        if not inference and on_cuda():
            return _cuda_depthwise_fn(stride, padding)(x, weight)
    if groups != 1 or dilation != (1, 1) or method == "mlx":
        return mx.conv2d(x, weight, stride, padding, dilation, groups)
    if method == "auto":
        plan = choose_plan(
            in_channels, out_channels, (kh, kw), stride, padding=padding, dtype=x.dtype
        )
    else:
        plan = LOWERED_PLAN if method == "im2col" else method
    _check_plan(plan, stride, padding, (kh, kw))
    streams = _PART_STREAMS if len(_PART_STREAMS) > 1 and x.shape[0] > 1 and on_cpu() else ()
    if plan == MLX_PLAN and not streams:
        return mx.conv2d(x, weight, stride, padding)
    return _conv_fn(stride, padding, plan, streams)(x, weight)


def _depthwise_taps(x: mx.array, weight: mx.array, stride: Pair, padding: Pair) -> mx.array:
    """A depthwise convolution (one filter per channel, weight ``(C, kh, kw, 1)``) as a sum
    over taps of the shifted, strided input times that tap's per-channel weights; in training
    :func:`_depthwise_fn` gives it a written gradient. On the CPU, forward and backward (then
    with MLX's gradient of the taps) measured 2.0–2.7× faster than MLX's grouped convolution
    (MobileNet's 3×3 layers, batch 4)."""
    (kh, kw), (sh, sw) = weight.shape[1:3], stride
    padded = _pad(x, padding)
    ho, wo = _out_size(padded.shape[1], kh, sh), _out_size(padded.shape[2], kw, sw)
    live_rows = _live_taps(kh, sh, ho, padding[0], x.shape[1])
    live_columns = _live_taps(kw, sw, wo, padding[1], x.shape[2])
    total = None
    for i in live_rows:
        for j in live_columns:
            rows = padded[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            tap = rows * weight[:, i, j, 0]
            total = tap if total is None else total + tap
    if total is None:  # every tap reads padding only
        return mx.zeros((x.shape[0], ho, wo, x.shape[-1]), mx.result_type(x, weight))
    return total


def _live_taps(kernel: int, stride: int, out: int, padding: int, size: int) -> list[int]:
    """The filter offsets along one axis whose window meets the input somewhere: on an input
    smaller than the filter (a 7×7 filter on 2×2 activations, as ConvNeXt's later stages at
    32 pixels) the others read only the zero padding, and are left out.

    Example:
        >>> _live_taps(7, 1, 2, 3, 2), _live_taps(3, 1, 8, 1, 8)
        ([2, 3, 4], [0, 1, 2])
    """
    live = []
    for offset in range(kernel):
        first = max(0, -(-(padding - offset) // stride))  # the first output row past the padding
        if first < out and offset + stride * first - padding < size:
            live.append(offset)
    return live


@functools.cache
def _depthwise_fn(stride: Pair, padding: Pair):
    """:func:`_depthwise_taps` with a written gradient. The weight gradient is one product and
    sum per tap, zero for a tap that reads only padding. At stride 1 the input gradient is the
    correlation of ``dy`` with the flipped filter (the same taps on ``dy``, padded to give the
    input's size); at larger strides it is that correlation per stride phase, with the phase's
    sub-filter, the phases then interleaved (:func:`_subpixel_input_grad`). MLX's own gradient
    of the taps writes each tap's slice into a zero-filled copy of the padded input and adds
    the copies. The values are the same up to the order of the additions.

    Forward and backward of one layer on a 2-core CPU, MLX's gradient of the taps against this
    one: 3×3, 4×56×56×144: 97 → 83 ms; 5×5, 4×28×28×240: 101 → 76 ms; 7×7, 32×8×8×96: 74 →
    37 ms (stride 1). Training steps, alternated in one process, against this gradient for
    3×3 filters only: ConvNeXt-Tiny 4,319 → 3,942 ms (batch 4, 224 px) and 918 → 729 ms
    (batch 32, 32 px), EfficientNet-B0 1,785 → 1,586 and 320 → 300 ms."""

    @mx.custom_function
    def depthwise(x: mx.array, weight: mx.array) -> mx.array:
        return _depthwise_taps(x, weight, stride, padding)

    @depthwise.vjp
    def depthwise_vjp(primals, cotangent, output):
        x, weight = primals
        (kh, kw), (ph, pw) = weight.shape[1:3], padding
        weight_grad = _depthwise_weight_grad(x, cotangent, (kh, kw), stride, padding)
        weight_grad = weight_grad.astype(weight.dtype)
        if stride == (1, 1) and ph < kh and pw < kw:  # the correlation gives the input's size
            flipped = weight[:, ::-1, ::-1, :]
            return _depthwise_taps(
                cotangent, flipped, (1, 1), (kh - 1 - ph, kw - 1 - pw)
            ), weight_grad
        padded_size = (x.shape[1] + 2 * ph, x.shape[2] + 2 * pw)
        full = _subpixel_input_grad(weight, cotangent, stride, padded_size, depthwise=True)
        return full[:, ph : ph + x.shape[1], pw : pw + x.shape[2], :], weight_grad

    return depthwise


def _depthwise_weight_grad(
    x: mx.array, cotangent: mx.array, kernel: Pair, stride: Pair, padding: Pair
) -> mx.array:
    """The gradient ``(C, kh, kw, 1)`` of a depthwise convolution's weight, in the dtype of
    ``x·dy``: per tap, the sum over batch and positions of ``dy`` times that tap's shifted,
    strided input; zero for a tap that reads only padding. The same arguments as the CUDA
    kernel's :func:`mlxvision.ops.cuda_depthwise.depthwise_weight_grad`."""
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = kernel, stride, padding, cotangent.shape[1:3]
    padded = _pad(x, padding)
    live = {
        (i, j)
        for i in _live_taps(kh, sh, ho, ph, x.shape[1])
        for j in _live_taps(kw, sw, wo, pw, x.shape[2])
    }
    zero = mx.zeros(x.shape[-1], mx.result_type(x, cotangent))
    per_tap = [
        (cotangent * padded[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]).sum(
            axis=(0, 1, 2)
        )
        if (i, j) in live
        else zero
        for i in range(kh)
        for j in range(kw)
    ]
    return mx.stack(per_tap, axis=1).reshape(x.shape[-1], kh, kw, 1)


@functools.cache
def _cuda_depthwise_fn(stride: Pair, padding: Pair):
    """A depthwise convolution for training on CUDA: MLX's forward and input gradient (cuDNN's
    kernels), with the weight gradient of the CUDA kernel
    :func:`mlxvision.ops.cuda_depthwise.depthwise_weight_grad`. MLX computes that gradient as
    a grouped convolution whose filter is the whole ``dy`` image, one group per channel.
    Weight gradient alone on an H200 (bfloat16, compiled), MLX's / the kernel's: 3×3 at
    256×16×16×96 16.6 / 0.12 ms, 5×5 at 256×8×8×240 11.2 / 0.18 ms."""

    def forward(x: mx.array, weight: mx.array) -> mx.array:
        return mx.conv2d(x, weight, stride, padding, groups=x.shape[-1])

    @mx.custom_function
    def depthwise(x: mx.array, weight: mx.array) -> mx.array:
        return forward(x, weight)

    @depthwise.vjp
    def depthwise_vjp(primals, cotangent, output):
        x, weight = primals
        _, (input_grad,) = mx.vjp(lambda x: forward(x, weight), [x], [cotangent])
        weight_grad = depthwise_weight_grad(x, cotangent, weight.shape[1:3], stride, padding)
        return input_grad, weight_grad.astype(weight.dtype)

    return depthwise


@functools.cache
def _compiled_depthwise_taps(stride: Pair, padding: Pair):
    """:func:`_depthwise_taps` under :func:`mlx.core.compile`, which fuses its two passes per
    tap into one: for inference only. On a 2-core CPU, batch 4 at 224 px, eval forward,
    alternated in one process: MobileNetV2 305 → 255 ms, EfficientNet-B0 725 → 503 ms,
    MobileNetV3-Large 214 → 182 ms. Training steps took 1-9% longer with it (uncompiled
    ``value_and_grad`` of a compiled function), so they keep the plain taps. The first
    compilation of the fused kernel takes about 1.6 s; MLX keeps it on disk for later
    processes (0.3 s)."""
    return mx.compile(lambda x, weight: _depthwise_taps(x, weight, stride, padding))


# --- patches and their transpose ---------------------------------------------------------------


def _out_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def _patches(x: mx.array, kernel: Pair, stride: Pair) -> mx.array:
    """``(N, Ho, Wo, kh·kw·C)``: the already padded input's patches, tap-major like OHWI.

    One strided view ``(N, Ho, Wo, kh, kw, C)`` of the input, copied once by the reshape.
    """
    (kh, kw), (sh, sw) = kernel, stride
    n, h, w, c = x.shape
    ho, wo = _out_size(h, kh, sh), _out_size(w, kw, sw)
    if (kh, kw) == (1, 1):
        return x[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :]
    x = mx.contiguous(x)
    view = mx.as_strided(x, (n, ho, wo, kh, kw, c), (h * w * c, sh * w * c, sw * c, w * c, c, 1))
    return view.reshape(n, ho, wo, kh * kw * c)


def _col2im(cols: mx.array, kernel: Pair, stride: Pair, size: Pair) -> mx.array:
    """The transpose of :func:`_patches`: add each tap's columns back onto its pixels.

    Pixel ``r`` of a row is reached by taps ``i ≡ r (mod stride)`` only, so the rows are built
    per stride phase, as sums of shifted (padded) taps, then interleaved by a reshape.
    """
    (kh, kw), (sh, sw), (hp, wp) = kernel, stride, size
    n, ho, wo, _ = cols.shape
    c = cols.shape[-1] // (kh * kw)
    hq, wq = -(-hp // sh), -(-wp // sw)
    cols = cols.reshape(n, ho, wo, kh * kw, c)
    rows = []
    for a in range(sh):
        row = []
        for b in range(sw):
            acc = None
            for i in range(a, kh, sh):
                for j in range(b, kw, sw):
                    oi, oj = i // sh, j // sw
                    tap = mx.pad(
                        cols[:, :, :, i * kw + j, :],
                        [(0, 0), (oi, hq - ho - oi), (oj, wq - wo - oj), (0, 0)],
                    )
                    acc = tap if acc is None else acc + tap
            row.append(mx.zeros((n, hq, wq, c), cols.dtype) if acc is None else acc)
        rows.append(row[0][:, :, :, None] if sw == 1 else mx.stack(row, axis=3))
    full = rows[0][:, :, None] if sh == 1 else mx.stack(rows, axis=2)
    full = full.reshape(n, hq * sh, wq * sw, c)
    return full[:, :hp, :wp, :]


# --- the three passes, each by MLX's convolution or by matrix products ------------------------


def _check_plan(plan: ConvPlan, stride: Pair, padding: Pair, kernel: Pair) -> None:
    for field, allowed in _PASSES.items():
        if getattr(plan, field) not in allowed:
            raise ValueError(f"conv2d: plan.{field} must be one of {allowed}, got {plan!r}")
    if "rows" in plan and stride != (1, 1):
        raise ValueError(f"conv2d: the 'rows' passes need stride 1, got stride {stride}")
    if plan.input_grad == "rows" and (padding[0] >= kernel[0] or padding[1] >= kernel[1]):
        raise ValueError(
            f"conv2d: the 'rows' input gradient needs padding < kernel, got padding {padding} "
            f"and kernel {kernel}"
        )


def _pad(x: mx.array, padding: Pair) -> mx.array:
    if padding == (0, 0):
        return x
    return mx.pad(x, [(0, 0), (padding[0], padding[0]), (padding[1], padding[1]), (0, 0)])


def _native():
    """:func:`mlxvision.native.onednn_conv`'s module, or None."""
    from ..native import onednn_conv

    return onednn_conv()


def _native_arguments(stride: Pair, padding: Pair) -> tuple[int, ...]:
    """Strides, paddings and the oneDNN threads of one pass: the BLAS's share of the cores."""
    from .. import backend

    threads = backend.BLAS_THREADS.get("count") or backend.available_cores()
    return (*stride, *padding, threads)


def _forward(x, weight, stride, padding, how):
    if how == "onednn":
        return _native().conv2d(x, weight, *_native_arguments(stride, padding))
    if how == "mlx":
        return mx.conv2d(x, weight, stride, padding)
    if how == "rows":
        return _shifted_rows_conv(x, weight, padding)
    cols = _patches(_pad(x, padding), weight.shape[1:3], stride)
    n, ho, wo, k = cols.shape
    y = cols.reshape(n * ho * wo, k) @ weight.reshape(weight.shape[0], k).T
    return y.reshape(n, ho, wo, -1)


def _input_grad(x, weight, dy, stride, padding, how):
    if how == "onednn":
        return _native().input_grad(dy, weight, list(x.shape), *_native_arguments(stride, padding))
    if how == "mlx":
        return mx.vjp(lambda u: mx.conv2d(u, weight, stride, padding), [x], [dy])[1][0]
    (ph, pw), (h, w) = padding, x.shape[1:3]
    if how == "rows":
        kh, kw = weight.shape[1:3]
        flipped = weight[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)
        return _shifted_rows_conv(dy, flipped, (kh - 1 - ph, kw - 1 - pw))
    if how == "subpixel":
        dx = _subpixel_input_grad(weight, dy, stride, (h + 2 * ph, w + 2 * pw))
        return dx[:, ph : ph + h, pw : pw + w, :]
    n, ho, wo, out_channels = dy.shape
    k = weight.size // out_channels
    dcols = (dy.reshape(-1, out_channels) @ weight.reshape(out_channels, k)).reshape(n, ho, wo, k)
    dx = _col2im(dcols, weight.shape[1:3], stride, (h + 2 * ph, w + 2 * pw))
    return dx[:, ph : ph + h, pw : pw + w, :]


def _shifted_rows(x: mx.array, kernel: Pair, padding: Pair):
    """The padded input as rows (one per pixel), the padded width, and ``tap(i, j)``: the block
    of rows that tap reads for every output pixel of the padded grid (a view)."""
    n, h, w, c = x.shape
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    rows = _pad(x, padding).reshape(n * hp * wp, c)
    count = n * hp * wp - (kernel[0] - 1) * wp - (kernel[1] - 1)

    def tap(i: int, j: int) -> mx.array:
        return rows[i * wp + j : i * wp + j + count]

    return (hp, wp, count), tap


def _shifted_rows_conv(x: mx.array, weight: mx.array, padding: Pair) -> mx.array:
    """A stride-1 convolution as one matrix product per tap, on shifted rows of the input.

    Flattened to rows (one per pixel of the padded input), the pixel under tap ``(i, j)`` of
    output pixel ``p`` (taken on the padded grid) is row ``p + i·Wp + j``: every tap reads one
    contiguous block of rows, so each product runs on a view, and ``mx.addmm`` accumulates
    the taps. The valid outputs are a strided view of the padded-grid result (the last ones
    end exactly at its last row).
    """
    out_channels, kh, kw, _ = weight.shape
    (hp, wp, _), tap = _shifted_rows(x, (kh, kw), padding)
    total = None
    for i in range(kh):
        for j in range(kw):
            w_ij = weight[:, i, j, :].T
            total = tap(i, j) @ w_ij if total is None else mx.addmm(total, tap(i, j), w_ij)
    return mx.as_strided(
        total,
        (x.shape[0], hp - kh + 1, wp - kw + 1, out_channels),
        (hp * wp * out_channels, wp * out_channels, out_channels, 1),
    )


def _shifted_rows_weight_grad(x: mx.array, dy: mx.array, kernel: Pair, padding: Pair) -> mx.array:
    """The weight gradient of :func:`_shifted_rows_conv`: tap ``(i, j)`` is ``dYᵀ · rows`` with
    ``dY`` placed on the padded grid (zeros where no output is) and the rows shifted as in the
    forward."""
    (kh, kw), out_channels = kernel, dy.shape[-1]
    (hp, wp, count), tap = _shifted_rows(x, kernel, padding)
    ho, wo = dy.shape[1:3]
    grid = mx.pad(dy, [(0, 0), (0, hp - ho), (0, wp - wo), (0, 0)])
    grid_t = grid.reshape(-1, out_channels)[:count].T
    taps = [grid_t @ tap(i, j) for i in range(kh) for j in range(kw)]
    return mx.stack(taps, axis=1).reshape(out_channels, kh, kw, x.shape[-1])


def _subpixel_input_grad(
    weight: mx.array, dy: mx.array, stride: Pair, size: Pair, depthwise: bool = False
) -> mx.array:
    """The input gradient (of the padded input, ``size``) one stride phase at a time.

    Pixel ``r = s·q + a`` receives ``Σ_t dY[q - t] · w[a + s·t]``: a stride-1 convolution of
    ``dY`` with the phase's flipped, transposed sub-kernel, which :func:`mlx.core.conv2d` runs
    fast (with ``depthwise``, ``weight`` is ``(C, kh, kw, 1)``: the same taps per channel,
    :func:`_depthwise_taps`). The phases are then interleaved by a reshape.
    """
    (sh, sw), (hp, wp) = stride, size
    n, ho, wo, _ = dy.shape
    c = weight.shape[0] if depthwise else weight.shape[-1]
    hq, wq = -(-hp // sh), -(-wp // sw)
    rows = []
    for a in range(sh):
        row = []
        for b in range(sw):
            sub = weight[:, a::sh, b::sw, :]
            ta, tb = sub.shape[1:3]
            if ta == 0 or tb == 0:
                row.append(mx.zeros((n, hq, wq, c), dy.dtype))
                continue
            flipped = sub[:, ::-1, ::-1, :]
            padded = mx.pad(dy, [(0, 0), (ta - 1, hq - ho), (tb - 1, wq - wo), (0, 0)])
            if depthwise:
                row.append(_depthwise_taps(padded, flipped, (1, 1), (0, 0)))
            else:
                row.append(mx.conv2d(padded, flipped.transpose(3, 1, 2, 0)))
        rows.append(row[0][:, :, :, None] if sw == 1 else mx.stack(row, axis=3))
    full = rows[0][:, :, None] if sh == 1 else mx.stack(rows, axis=2)
    return full.reshape(n, hq * sh, wq * sw, c)[:, :hp, :wp, :]


def _transposed_conv_weight_grad(
    x: mx.array, dy: mx.array, kernel: Pair, stride: Pair, padding: Pair
) -> mx.array:
    """The weight gradient as one convolution: ``dW[o, i, j, c] = Σ dY[n, p, q, o] ·
    Xpad[n, s·p + i, s·q + j, c]`` is the input seen as ``(C, H, W, N)`` convolved with ``dY``
    seen as ``(O, Ho, Wo, N)``, a kernel dilated by the stride. The high padding makes the
    output exactly ``kernel`` (negative where the forward never reached the last rows)."""
    sizes = zip(kernel, stride, dy.shape[1:3], x.shape[1:3], padding, strict=True)
    high = tuple(k + s * (out - 1) - size - p for k, s, out, size, p in sizes)
    dw_t = mx.conv_general(
        x.swapaxes(0, 3), dy.swapaxes(0, 3), padding=(padding, high), kernel_dilation=stride
    )
    return dw_t.swapaxes(0, 3)


def _weight_grad(x, weight, dy, stride, padding, how):
    if how == "onednn":
        return _native().weight_grad(x, dy, list(weight.shape), *_native_arguments(stride, padding))
    if how == "conv":
        return _transposed_conv_weight_grad(x, dy, weight.shape[1:3], stride, padding)
    if how == "mlx":
        return mx.vjp(lambda v: mx.conv2d(x, v, stride, padding), [weight], [dy])[1][0]
    if how == "rows":
        return _shifted_rows_weight_grad(x, dy, weight.shape[1:3], padding)
    cols = _patches(_pad(x, padding), weight.shape[1:3], stride)
    out_channels = dy.shape[-1]
    dw = dy.reshape(-1, out_channels).T @ cols.reshape(-1, cols.shape[-1])
    return dw.reshape(weight.shape)


@contextlib.contextmanager
def unordered_conv_gradients() -> Iterator[None]:
    """Within this block the backward pass of a CPU convolution does not make its input
    gradient wait for its weight gradient.

    By default it does (``mx.depends``), so that each layer's input and output gradient are
    freed before the backward pass moves on: MLX otherwise computes a weight gradient only when
    evaluation reaches that parameter, after the whole backward chain, and ResNet-20's training
    step at batch 128 peaked at 664 MB instead of 342 MB. A batch split over parallel CPU
    streams (:mod:`mlxvision.engine.streams`) trains faster without the order (ResNet-20, two
    streams: 87 against 101-107 images/s), and traces its parts in this block.

    The gradients are the same either way; only the order of evaluation changes.

    Example:
        >>> x, w = mx.ones((1, 4, 4, 2)), mx.ones((3, 3, 3, 2))
        >>> def loss(w):
        ...     return conv2d(x, w, padding=1).sum()
        >>> with unordered_conv_gradients():
        ...     unordered = mx.grad(loss)(w)
        >>> mx.array_equal(unordered, mx.grad(loss)(w)).item()
        True
    """
    with _UNORDERED.block():
        yield


@functools.lru_cache(maxsize=256)  # the streams of each training step are new keys
def _conv_fn(stride: Pair, padding: Pair, plan: ConvPlan, streams: tuple[mx.Stream, ...] = ()):
    """A custom function ``(x, w) -> y`` for one stride, padding and plan; with ``streams``,
    computed in batch parts, one per stream (see :func:`convolutions_in_parts`)."""

    def in_parts(*arrays: mx.array) -> Iterator[tuple[mx.array, ...]]:
        """Each part of ``arrays`` (split along the batch), inside its stream's context."""
        if not streams:
            yield arrays
            return
        for (start, stop), stream in zip(
            part_bounds(arrays[0].shape[0], len(streams)), streams, strict=False
        ):
            with mx.stream(stream):
                yield tuple(a[start:stop] for a in arrays)

    def joined(parts: list[mx.array]) -> mx.array:
        return parts[0] if len(parts) == 1 else mx.concatenate(parts)

    @mx.custom_function
    def conv(x: mx.array, weight: mx.array) -> mx.array:
        return joined(
            [_forward(part, weight, stride, padding, plan.forward) for (part,) in in_parts(x)]
        )

    @conv.vjp
    def conv_vjp(primals, cotangent, output):
        x, weight = primals
        dxs, dws = [], []
        for part, dy in in_parts(x, cotangent):
            dw = _weight_grad(part, weight, dy, stride, padding, plan.weight_grad)
            dx = _input_grad(part, weight, dy, stride, padding, plan.input_grad)
            if on_cpu() and not _UNORDERED.depth:  # see unordered_conv_gradients
                dx = mx.depends(dx, dw)
            dxs.append(dx)
            dws.append(dw)
        return joined(dxs), functools.reduce(mx.add, dws)

    return conv
