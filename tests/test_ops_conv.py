"""The lowered convolutions of mlxvision.ops against mx.conv2d and a NumPy reference."""

import itertools

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision
from mlxvision.backend import on_cpu
from mlxvision.ops import (
    CUDA_PLAN,
    LOWERED_PLAN,
    ROWS_PLAN,
    STRIDED_PLAN,
    Conv2d,
    ConvPlan,
    MaxPool2d,
    choose_plan,
    conv2d,
    convolutions_in_parts,
    fast_conv_disabled,
    fast_conv_enabled,
    keep_freed_memory,
    unordered_conv_gradients,
    use_fast_layers,
)

RTOL = 1e-4  # float32, relative to the largest magnitude of the reference


def assert_close(actual: mx.array, expected: mx.array, rtol: float = RTOL) -> None:
    actual, expected = np.array(actual), np.array(expected)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-6)
    error = float(np.abs(actual - expected).max())
    assert error <= rtol * scale, f"max error {error} > {rtol} * {scale}"


def numpy_conv2d(x: np.ndarray, w: np.ndarray, stride, padding) -> np.ndarray:
    """Direct NHWC × OHWI cross-correlation, one output pixel at a time (``stride`` and
    ``padding`` a number or a (rows, columns) pair)."""
    (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding))
    x = np.pad(x, [(0, 0), (ph, ph), (pw, pw), (0, 0)]).astype(np.float64)
    n, h, wd, _ = x.shape
    out_channels, kh, kw, _ = w.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    y = np.zeros((n, ho, wo, out_channels))
    for i, j in itertools.product(range(ho), range(wo)):
        patch = x[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
        y[:, i, j, :] = np.einsum("nhwc,ohwc->no", patch, w)
    return y


def value_and_grads(conv, x, w, cotangent):
    outputs, grads = mx.vjp(conv, [x, w], [cotangent])
    return outputs[0], grads[0], grads[1]


PLANS = [
    LOWERED_PLAN,
    STRIDED_PLAN,
    ConvPlan("mlx", "col2im", "matmul"),
    ConvPlan("im2col", "mlx", "mlx"),
    ConvPlan("mlx", "mlx", "conv"),
    "auto",
]
CASES = [
    # kernel, stride, padding, height, width
    (3, 1, 1, 8, 8),
    (3, 2, 1, 8, 8),
    (3, 1, 0, 7, 9),
    (3, 2, 0, 9, 8),
    (3, 2, 1, 7, 7),
    (1, 1, 0, 6, 6),
    (1, 2, 0, 7, 8),
    (1, 2, 1, 6, 6),
    (5, 3, 2, 11, 10),
]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p if isinstance(p, str) else "-".join(p))
@pytest.mark.parametrize("kernel,stride,padding,height,width", CASES)
def test_forward_and_gradients_match_mlx(plan, kernel, stride, padding, height, width):
    mx.random.seed(0)
    x = mx.random.normal((2, height, width, 5))
    w = mx.random.normal((6, kernel, kernel, 5))
    cotangent = mx.random.normal(mx.conv2d(x, w, stride, padding).shape)
    expected = value_and_grads(lambda a, b: mx.conv2d(a, b, stride, padding), x, w, cotangent)
    actual = value_and_grads(
        lambda a, b: conv2d(a, b, stride, padding, method=plan), x, w, cotangent
    )
    for name, a, e in zip(("output", "input grad", "weight grad"), actual, expected, strict=True):
        assert a.shape == e.shape, name
        assert_close(a, e)


ROWS_CASES = [case for case in CASES if case[1] == 1] + [(5, 1, 2, 6, 9), (2, 1, 1, 5, 5)]


@pytest.mark.parametrize("kernel,stride,padding,height,width", ROWS_CASES)
def test_shifted_rows_passes_match_mlx_and_numpy(kernel, stride, padding, height, width):
    mx.random.seed(3)
    x = mx.random.normal((3, height, width, 5))
    w = mx.random.normal((4, kernel, kernel, 5))
    cotangent = mx.random.normal(mx.conv2d(x, w, stride, padding).shape)
    expected = value_and_grads(lambda a, b: mx.conv2d(a, b, stride, padding), x, w, cotangent)
    every_pass = ConvPlan("rows", "rows", "rows")
    actual = value_and_grads(
        lambda a, b: conv2d(a, b, stride, padding, method=every_pass), x, w, cotangent
    )
    for name, a, e in zip(("output", "input grad", "weight grad"), actual, expected, strict=True):
        assert a.shape == e.shape, name
        assert_close(a, e)
    reference = numpy_conv2d(np.array(x), np.array(w), stride, padding)
    assert_close(actual[0], mx.array(reference.astype(np.float32)))


def test_shifted_rows_refuse_what_they_cannot_compute():
    x, w = mx.ones((1, 6, 6, 2)), mx.ones((3, 3, 3, 2))
    with pytest.raises(ValueError, match="stride 1"):
        conv2d(x, w, 2, 1, method=ROWS_PLAN)
    with pytest.raises(ValueError, match="stride 1"):
        conv2d(x, w, 2, 1, method=ConvPlan("mlx", "mlx", "rows"))
    with pytest.raises(ValueError, match="padding < kernel"):
        conv2d(x, w, 1, 3, method=ConvPlan("mlx", "rows", "mlx"))
    y = conv2d(x, w, 1, 3, method=ConvPlan("rows", "mlx", "mlx"))  # the forward may pad more
    assert_close(y, mx.conv2d(x, w, 1, 3))


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (3, 2, 0)])
def test_forward_matches_numpy(kernel, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 7, 4)).astype(np.float32)
    w = rng.standard_normal((3, kernel, kernel, 4)).astype(np.float32)
    expected = numpy_conv2d(x, w, stride, padding)
    y = conv2d(mx.array(x), mx.array(w), stride, padding, method="im2col")
    assert_close(y, mx.array(expected.astype(np.float32)))


def test_gradients_under_compile_match():
    x = mx.random.normal((2, 8, 8, 3))
    w = mx.random.normal((4, 3, 3, 3))

    def loss(conv):
        return lambda a, b: (conv(a, b) ** 2).sum()

    fast = mx.compile(mx.grad(loss(lambda a, b: conv2d(a, b, 2, 1, method="im2col")), (0, 1)))
    plain = mx.grad(loss(lambda a, b: mx.conv2d(a, b, 2, 1)), (0, 1))
    for a, e in zip(fast(x, w), plain(x, w), strict=True):
        assert_close(a, e)


def test_non_contiguous_input():
    x = mx.random.normal((2, 3, 9, 8)).transpose(0, 2, 3, 1)
    w = mx.random.normal((4, 3, 3, 3))
    assert_close(conv2d(x, w, 2, 0, method="im2col"), mx.conv2d(x, w, 2, 0))


def test_grouped_and_dilated_fall_back_to_mlx_exactly():
    x = mx.random.normal((2, 8, 8, 4))
    w = mx.random.normal((6, 3, 3, 2))
    got = conv2d(x, w, 1, 1, groups=2, method="im2col")
    assert mx.array_equal(got, mx.conv2d(x, w, 1, 1, groups=2))
    w = mx.random.normal((6, 3, 3, 4))
    got = conv2d(x, w, 1, 2, dilation=2, method="im2col")
    assert mx.array_equal(got, mx.conv2d(x, w, 1, 2, dilation=2))


@pytest.mark.parametrize(
    "stride,padding,size,kernel",
    [
        (1, 1, (9, 8), 3),
        (2, 1, (9, 8), 3),
        (2, 0, (7, 10), 3),
        (1, 0, (7, 10), 3),
        (1, 2, (9, 9), 5),
        # inputs smaller than the filter: taps that read only padding are left out
        (1, 3, (2, 2), 7),
        (1, 3, (1, 4), 7),
        (1, 1, (1, 1), 3),
        (2, 2, (1, 3), 5),
        (5, 4, (1, 1), 3),  # every tap reads padding only: zeros
        (1, 4, (2, 3), 3),  # padding beyond the filter: the input gradient cropped
        # larger strides: the input gradient per stride phase
        (2, 2, (11, 12), 5),
        (3, 1, (10, 8), 3),
        (2, 0, (8, 7), 1),  # phases that no tap reaches: zeros
        ((2, 1), (1, 2), (9, 8), 3),
    ],
)
def test_depthwise_taps_match_mlx_and_numpy(stride, padding, size, kernel):
    """The taps' written gradient, at stride 1 and per stride phase, against MLX's grouped
    convolution."""
    mx.random.seed(5)
    channels = 6
    x = mx.random.normal((2, *size, channels))
    w = mx.random.normal((channels, kernel, kernel, 1))

    def plain(a, b):
        return mx.conv2d(a, b, stride, padding, groups=channels)

    def taps(a, b):
        return conv2d(a, b, stride, padding, groups=channels)

    cotangent = mx.random.normal(plain(x, w).shape)
    expected = value_and_grads(plain, x, w, cotangent)
    actual = value_and_grads(taps, x, w, cotangent)
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e)
    reference = np.stack(
        [
            numpy_conv2d(np.array(x)[..., c : c + 1], np.array(w)[c : c + 1], stride, padding)[
                ..., 0
            ]
            for c in range(channels)
        ],
        axis=-1,
    )
    assert_close(actual[0], mx.array(reference.astype(np.float32)))

    # for inference, the same taps compiled into one pass; a gradient through them still holds
    def compiled_taps(a, b):
        return conv2d(a, b, stride, padding, groups=channels, inference=True)

    assert mx.array_equal(compiled_taps(x, w), actual[0])
    for a, e in zip(value_and_grads(compiled_taps, x, w, cotangent), expected, strict=True):
        assert_close(a, e)
    with fast_conv_disabled():
        assert mx.array_equal(taps(x, w), plain(x, w))
        assert mx.array_equal(compiled_taps(x, w), plain(x, w))


def test_choose_plan_uses_mlx_off_the_cpu_and_when_disabled(monkeypatch):
    assert choose_plan(64, 64, (3, 3), (2, 2), mx.Device(mx.gpu)).forward == "mlx"
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)
    assert choose_plan(64, 64, (3, 3), (2, 2), mx.Device(mx.gpu)) == CUDA_PLAN
    assert choose_plan(16, 16, (3, 3), (1, 1), mx.gpu, padding=(1, 1)) == CUDA_PLAN
    monkeypatch.setattr(mx.cuda, "is_available", lambda: False)
    assert choose_plan(64, 64, (3, 3), (2, 2), mx.Device(mx.gpu)) == ConvPlan("mlx", "mlx", "mlx")
    assert choose_plan(64, 64, (3, 3), (2, 2), mx.cpu) != ConvPlan("mlx", "mlx", "mlx")
    monkeypatch.setenv("MLXVISION_FAST_CONV", "0")
    assert not fast_conv_enabled()
    assert choose_plan(64, 64, (3, 3), (2, 2), mx.cpu) == ConvPlan("mlx", "mlx", "mlx")


def test_choose_plan_takes_shifted_rows_where_they_measured_faster():
    def plan(cin, cout, padding=1, kernel=3):
        return choose_plan(cin, cout, (kernel, kernel), (1, 1), mx.cpu, padding=(padding,) * 2)

    assert plan(16, 16) == ROWS_PLAN  # ResNet-20's first stage
    assert plan(32, 16) == ConvPlan("rows", "mlx", "mlx")  # narrowing: the forward only
    assert plan(16, 32) == ConvPlan("mlx", "rows", "mlx")  # widening: the input gradient only
    assert plan(64, 64) == ConvPlan("mlx", "mlx", "mlx")  # wide layers: MLX's
    assert plan(16, 16, padding=3) == ConvPlan("rows", "mlx", "mlx")  # padding ≥ kernel
    assert plan(16, 16, padding=0, kernel=1) == LOWERED_PLAN  # 1×1: matrix products
    assert choose_plan(16, 16, (3, 3), (1, 1), mx.Device(mx.gpu), padding=(1, 1)).forward == "mlx"


def _layer_outputs(layer, x):
    def loss(params, x):
        layer.update(params)
        return (layer(x) ** 2).sum()

    value, grads = mx.value_and_grad(loss)(layer.trainable_parameters(), x)
    return layer(x), value, grads["weight"], grads["bias"]


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_opt_out_gives_exactly_mlx(monkeypatch, stride):
    fast = Conv2d(3, 8, 3, stride=stride, padding=1)
    plain = nn.Conv2d(3, 8, 3, stride=stride, padding=1)
    plain.update(fast.parameters())
    x = mx.random.normal((2, 10, 10, 3))
    expected = _layer_outputs(plain, x)
    monkeypatch.setenv("MLXVISION_FAST_CONV", "0")
    for a, e in zip(_layer_outputs(fast, x), expected, strict=True):
        assert mx.array_equal(a, e)
    monkeypatch.delenv("MLXVISION_FAST_CONV")
    with fast_conv_disabled():
        for a, e in zip(_layer_outputs(fast, x), expected, strict=True):
            assert mx.array_equal(a, e)
    for a, e in zip(_layer_outputs(fast, x), expected, strict=True):
        assert_close(a, e)


def test_use_fast_layers_swaps_in_place_and_back():
    model = use_fast_layers(mlxvision.create_model("resnet20", num_classes=10), enabled=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(c) is nn.Conv2d for c in convs)
    weights = [c.weight for c in convs]
    x = mx.random.normal((2, 32, 32, 3))
    model.eval()
    expected = model(x)
    assert use_fast_layers(model) is model
    assert all(type(c) is Conv2d for c in convs)
    assert all(c.weight is w for c, w in zip(convs, weights, strict=True))
    assert_close(model(x), expected)
    use_fast_layers(model, enabled=False)
    assert all(type(c) is nn.Conv2d for c in convs)
    assert mx.array_equal(model(x), expected)


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_fast_max_pool_equals_mlx_pooling_and_its_gradient(size):
    x = mx.random.normal((3, *size, 4), key=mx.random.key(5))
    weights = mx.random.normal((3, size[0] // 2, size[1] // 2, 4), key=mx.random.key(6))

    def loss(pool):
        return lambda a: (pool(a) * weights).sum()

    fast, plain = MaxPool2d(2, 2), nn.MaxPool2d(2, 2)
    assert mx.array_equal(fast(x), plain(x)).item()
    assert mx.array_equal(mx.grad(loss(fast))(x), mx.grad(loss(plain))(x)).item()
    overlapping = MaxPool2d(3, 2)  # not a reshape: MLX's pooling, unchanged
    assert mx.array_equal(overlapping(x), nn.MaxPool2d(3, 2)(x)).item()


def test_fast_max_pool_steps_aside_for_exporters():
    from mlxvision.export.trace import trace

    model = use_fast_layers(nn.Sequential(nn.MaxPool2d(2, 2)))
    assert type(model.layers[0]) is MaxPool2d
    graph = trace(model.eval(), mx.zeros((1, 4, 4, 2)))
    assert graph.op_counts().get("pool") == 1  # MLX's pooling, which exports to every format


def test_bad_input_is_named():
    x, w = mx.zeros((1, 4, 4, 3)), mx.zeros((2, 3, 3, 3))
    with pytest.raises(ValueError, match="method"):
        conv2d(x, w, method="fft")
    with pytest.raises(ValueError, match="channels"):
        conv2d(mx.zeros((1, 4, 4, 5)), w)
    with pytest.raises(ValueError, match="4-D"):
        conv2d(mx.zeros((4, 4, 3)), w)
    with pytest.raises(ValueError, match="input_grad"):
        conv2d(x, w, method=ConvPlan("im2col", "fft", "matmul"))
    with pytest.raises(ValueError, match="stride"):
        conv2d(x, w, stride=(1, 2, 3))
    with pytest.raises(TypeError, match="model"):
        use_fast_layers("resnet20")


def test_keep_freed_memory_checks_and_skips_other_systems(monkeypatch):
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(0)
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not on_cpu(), reason="the order is applied on the CPU only")
def test_cpu_conv_backward_frees_each_layer_before_moving_on():
    mx.random.seed(0)
    x = mx.random.normal((32, 16, 16, 16))
    weights = [mx.random.normal((16, 3, 3, 16)) * 0.1 for _ in range(12)]

    plan = choose_plan(16, 16, (3, 3), (1, 1), mx.cpu, padding=(1, 1))  # MLX's weight gradient

    def loss(weights):
        y = x
        for w in weights:
            y = conv2d(y, w, padding=1, method=plan)
        return (y * y).sum()

    def peak_and_grads():
        mx.eval(x, weights)
        mx.reset_peak_memory()
        before = mx.get_active_memory()  # arrays other tests left alive count too
        grads = mx.grad(loss)(weights)
        mx.eval(grads)  # first layer first: the order the optimizer's update asks for them
        return mx.get_peak_memory() - before, grads

    ordered, grads = peak_and_grads()
    with unordered_conv_gradients():
        unordered, plain_grads = peak_and_grads()
    for g, h in zip(grads, plain_grads, strict=True):
        assert mx.array_equal(g, h).item()
    assert ordered < 0.5 * unordered, (ordered, unordered)  # measured 22 MB against 82 MB


def numpy_max_pool_and_gradient(x: np.ndarray, kernel, stride, padding, cotangent: np.ndarray):
    """Max pooling of NHWC ``x`` and its gradient for ``cotangent``, PyTorch's rule: each
    window's gradient goes to its first largest value, in row-major window order."""
    (kh, kw), (sh, sw), ((top, bottom), (left, right)) = kernel, stride, padding
    padded = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], constant_values=-np.inf)
    rows = (padded.shape[1] - kh) // sh + 1
    cols = (padded.shape[2] - kw) // sw + 1
    out = np.empty((x.shape[0], rows, cols, x.shape[3]), x.dtype)
    grad = np.zeros_like(padded)
    for n, r, c, ch in itertools.product(*map(range, (x.shape[0], rows, cols, x.shape[3]))):
        window = padded[n, r * sh : r * sh + kh, c * sw : c * sw + kw, ch]
        i, j = np.unravel_index(np.argmax(window), window.shape)  # argmax: the first maximum
        out[n, r, c, ch] = window[i, j]
        grad[n, r * sh + i, c * sw + j, ch] += cotangent[n, r, c, ch]
    return out, grad[:, top : top + x.shape[1], left : left + x.shape[2]]


POOLINGS = [  # kernel, stride, padding: non-overlapping, overlapping, padded, rectangular
    ((2, 2), (2, 2), ((0, 0), (0, 0))),
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((3, 3), (1, 1), ((1, 1), (1, 1))),
    ((2, 3), (1, 2), ((1, 1), (0, 0))),
]


@pytest.mark.parametrize("kernel, stride, padding", POOLINGS)
def test_window_slices_max_pool_against_numpy_with_ties(kernel, stride, padding):
    from mlxvision.ops.layers import max_of_window_slices

    # small integers: most windows hold equal maxima
    x = mx.random.randint(0, 3, (2, 7, 9, 3), key=mx.random.key(1)).astype(mx.float32)
    out = max_of_window_slices(x, kernel, stride, padding)
    cotangent = mx.random.normal(out.shape, key=mx.random.key(2))
    grad = mx.grad(lambda a: (max_of_window_slices(a, kernel, stride, padding) * cotangent).sum())(
        x
    )
    expected, expected_grad = numpy_max_pool_and_gradient(
        np.array(x), kernel, stride, padding, np.array(cotangent)
    )
    reference = nn.MaxPool2d(kernel, stride, [p[0] for p in padding])
    assert np.array_equal(np.array(out), expected)
    if padding[0] == padding[1]:  # MLX's pooling pads both sides equally
        assert mx.array_equal(out, reference(x)).item()
    np.testing.assert_allclose(np.array(grad), expected_grad, rtol=1e-6, atol=1e-6)


def test_max_pool_on_cuda_takes_the_window_slices(monkeypatch):
    """With the CUDA backend stood in, MaxPool2d computes the window slices' form (the
    gradient of tied maxima goes to the first, not split as MLX's pooling does), and MLX's
    pooling under fast_conv_disabled."""
    from mlxvision.ops import layers

    monkeypatch.setattr(layers, "on_cuda", lambda: True)
    monkeypatch.setattr(layers, "on_cpu", lambda: False)
    x = mx.ones((1, 4, 4, 1))
    first = np.zeros((1, 4, 4, 1), np.float32)
    first[:, ::2, ::2] = 1
    split = np.full((1, 4, 4, 1), 0.25, np.float32)

    def gradient(pool):
        return np.array(mx.grad(lambda a: pool(a).sum())(x))

    pool = MaxPool2d(2, 2)
    np.testing.assert_array_equal(gradient(pool), first)
    with fast_conv_disabled():
        np.testing.assert_array_equal(gradient(pool), split)
    np.testing.assert_array_equal(gradient(nn.MaxPool2d(2, 2)), split)


@pytest.mark.skipif(not on_cpu(), reason="the parts run on CPU streams")
@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride",
    [(8, 8, 3, 1), (40, 40, 3, 1), (8, 16, 3, 2), (8, 16, 1, 1)],  # rows, MLX's, strided, 1×1
)
def test_convolutions_in_parts_match_the_whole_batch(
    tmp_path, monkeypatch, in_channels, out_channels, kernel, stride
):
    """Output, input gradient and weight gradient of a batch of 5 in two parts (3 + 2), each
    pass on its stream, against the whole batch; a batch of 1 is not split. The plans of
    ``choose_plan`` (no native convolution)."""
    from mlxvision.ops import conv

    monkeypatch.setattr(conv, "_native", lambda: None)
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((5, 8, 8, in_channels)).astype(np.float32))
    w = mx.array(rng.standard_normal((out_channels, kernel, kernel, in_channels)) / kernel)
    w = w.astype(mx.float32)
    padding = kernel // 2

    def run(x):
        def loss(x, w):
            y = conv2d(x, w, stride=stride, padding=padding)
            return (y * y).sum(), y

        (_, y), (dx, dw) = mx.value_and_grad(loss, argnums=(0, 1))(x, w)
        return y, dx, dw

    streams = [mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)]
    whole = run(x)
    with convolutions_in_parts(streams):
        parts = run(x)
        single = conv2d(x[:1], w, stride=stride, padding=padding)
        split = conv2d(x, w, stride=stride, padding=padding)
    for actual, expected in zip(parts, whole, strict=True):
        assert_close(actual, expected)
    mx.export_to_dot(str(tmp_path / "split.dot"), split)
    mx.export_to_dot(str(tmp_path / "single.dot"), single)
    assert "Concatenate" in (tmp_path / "split.dot").read_text()
    assert "Concatenate" not in (tmp_path / "single.dot").read_text()
