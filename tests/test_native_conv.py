"""oneDNN's convolution passes (mlxvision.native) against MLX's own convolution."""

import os

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest

from mlxvision import native
from mlxvision.backend import on_cpu
from mlxvision.engine import make_train_step
from mlxvision.models import create_model
from mlxvision.ops import conv2d

RTOL = 1e-5  # float32, relative to the largest magnitude of MLX's result


def _module():
    module = native.onednn_conv()
    if module is None and os.environ.get("MLXVISION_REQUIRE_NATIVE") == "1":
        pytest.fail(f"MLXVISION_REQUIRE_NATIVE=1 but: {native.native_status()}")
    return module


needs_native = pytest.mark.skipif(
    not on_cpu() or _module() is None, reason=f"no native convolution: {native.native_status()}"
)


def assert_close(actual, expected):
    actual, expected = np.array(actual), np.array(expected)
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-6)
    assert float(np.abs(actual - expected).max()) <= RTOL * scale


@needs_native
@pytest.mark.parametrize(
    "batch, size, in_channels, out_channels, kernel, stride, padding",
    [
        (5, 8, 3, 4, 3, 1, 1),
        (4, 9, 8, 16, 3, 2, 1),  # odd size, strided
        (3, 8, 8, 16, 1, 1, 0),  # 1×1
        (2, 16, 16, 32, 3, 2, 0),  # no padding
        (2, 15, 3, 8, 7, 2, 3),  # an ImageNet stem
    ],
)
def test_native_passes_match_mlx(batch, size, in_channels, out_channels, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((batch, size, size, in_channels)).astype(np.float32))
    w = mx.array(rng.standard_normal((out_channels, kernel, kernel, in_channels)) / kernel)
    w = w.astype(mx.float32)

    def run(fn):
        def loss(x, w):
            y = fn(x, w)
            return (y * y).sum(), y

        (_, y), grads = mx.value_and_grad(loss, argnums=(0, 1))(x, w)
        return y, *grads

    native_results = run(lambda x, w: conv2d(x, w, stride=stride, padding=padding))
    mlx_results = run(lambda x, w: mx.conv2d(x, w, stride=stride, padding=padding))
    for actual, expected in zip(native_results, mlx_results, strict=True):
        assert_close(actual, expected)
    # the primitive's own gradient (used outside mlxvision's conv2d) agrees too
    module = _module()
    own = run(lambda x, w: module.conv2d(x, w, stride, stride, padding, padding, 2))
    for actual, expected in zip(own, mlx_results, strict=True):
        assert_close(actual, expected)


@needs_native
def test_auto_uses_native_passes_for_float32_only_and_the_setting_opts_out(tmp_path, monkeypatch):
    x, w = mx.random.normal((2, 8, 8, 4)), mx.random.normal((4, 3, 3, 4))

    def graph(y) -> str:
        mx.export_to_dot(str(tmp_path / "graph.dot"), y)
        return (tmp_path / "graph.dot").read_text()

    assert "OneDnnConv" in graph(conv2d(x, w, padding=1))
    assert "OneDnnConv" not in graph(conv2d(x.astype(mx.bfloat16), w.astype(mx.bfloat16)))
    monkeypatch.setenv("MLXVISION_NATIVE_CONV", "0")
    native.onednn_conv.cache_clear()
    try:
        assert native.onednn_conv() is None
        assert "MLXVISION_NATIVE_CONV=0" in native.native_status()
        assert "OneDnnConv" not in graph(conv2d(x, w, padding=1))
    finally:
        native.onednn_conv.cache_clear()


@needs_native
def test_training_with_native_passes_matches_the_lowered_ones(monkeypatch):
    """ResNet-20, two steps of batch 8 (its convolutions in parts on two streams, as on a
    2-core CPU): the same losses and weights as with the lowered passes."""
    from mlx.utils import tree_flatten

    from mlxvision.engine import steps

    monkeypatch.setattr(steps, "cores_per_process", lambda group: 2)

    def run():
        mx.random.seed(0)
        model = create_model("resnet20", num_classes=10, in_channels=1)
        step = make_train_step(model, optim.SGD(learning_rate=0.05, momentum=0.9))
        rng = np.random.default_rng(0)
        losses = []
        for _ in range(2):
            images = mx.array(rng.standard_normal((8, 8, 8, 1)).astype(np.float32))
            loss, _ = step(images, mx.array(rng.integers(0, 10, 8)))
            mx.eval(loss, model.state)
            losses.append(loss.item())
        return losses, dict(tree_flatten(model.parameters()))

    native_losses, native_weights = run()
    monkeypatch.setenv("MLXVISION_NATIVE_CONV", "0")
    native.onednn_conv.cache_clear()
    try:
        lowered_losses, lowered_weights = run()
    finally:
        native.onednn_conv.cache_clear()
    assert native_losses == pytest.approx(lowered_losses, rel=1e-5)
    for name, value in lowered_weights.items():
        np.testing.assert_allclose(np.array(native_weights[name]), np.array(value), atol=1e-5)


def test_status_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(native.shutil, "which", lambda tool: None)
    monkeypatch.setattr(native.platform, "system", lambda: "Linux")
    monkeypatch.delenv("MLXVISION_NATIVE_CONV", raising=False)
    native.onednn_conv.cache_clear()
    try:
        assert native.onednn_conv() is None
        assert "missing cmake, c++" in native.native_status()
        monkeypatch.setenv("MLXVISION_NATIVE_CONV", "1")
        native.onednn_conv.cache_clear()
        with pytest.raises(RuntimeError, match="MLXVISION_NATIVE_CONV=1: missing cmake"):
            native.onednn_conv()
    finally:
        native.onednn_conv.cache_clear()


def test_a_failed_build_leaves_no_library(tmp_path, monkeypatch):
    """A build that fails (here: a source that does not compile) raises with the compiler's
    output and leaves nothing in the cache but its lock file."""
    if native.shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    source = tmp_path / "source"
    source.mkdir()
    (source / "CMakeLists.txt").write_text((native.SOURCE / "CMakeLists.txt").read_text())
    (source / "onednn_conv.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", source)
    library = tmp_path / "cache" / "lib.so"
    library.parent.mkdir()
    with pytest.raises(native._Unavailable, match="build failed|does not name a type|error"):
        native._build(library)
    assert not library.exists()
    assert list(library.parent.iterdir()) == []
