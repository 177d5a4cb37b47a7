"""export.trace: MLX primitives into the IR, the passes, the channels-first rewrite."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision
from export_models import Sorter, mixed_net
from mlxvision.export import TrainingModeError, UnsupportedPrimitiveError, trace
from mlxvision.export.layout import to_channels_first


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def cnn():
    mx.random.seed(1)
    return mlxvision.create_model("simple_cnn", num_classes=10, in_channels=3, input_size=32).eval()


def test_simple_cnn_trace_matches_mlx(cnn):
    graph = trace(cnn, mx.zeros((1, 32, 32, 3)))
    assert graph.dynamic_batch
    ops = graph.op_counts()
    assert ops["conv"] == 2 and ops["pool"] == 2 and ops["linear"] == 2
    assert "as_strided" not in ops and "transpose" not in ops
    x = np.random.default_rng(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
    ref = np.array(cnn(mx.array(x)))
    assert _rel(graph.run(x)[0], ref) < 1e-5
    nchw = to_channels_first(graph)
    image = nchw.values[nchw.inputs[0]]
    assert image.shape[1:] == (3, 32, 32) and image.dyn == (True, False, False, False)
    assert _rel(nchw.run(x.transpose(0, 3, 1, 2))[0], ref) < 1e-5


def test_mixed_model_passes_fold_batchnorm_and_pools():
    model = mixed_net()
    graph = trace(model, mx.zeros((2, 16, 16, 3)))
    ops = graph.op_counts()
    assert ops["pool"] == 3 and ops["conv"] == 3
    assert "as_strided" not in ops and "pad" not in ops
    # BatchNorm's (x - mean) * rsqrt(var + eps) * w + b is folded into the convolutions
    producers = graph.producers()
    for node in graph.nodes:
        if node.op == "conv":
            assert len(node.inputs) == 3
        if node.op in ("mul", "add", "sub") and any(graph.is_const(i) for i in node.inputs):
            src = producers.get(next(i for i in node.inputs if not graph.is_const(i)))
            assert src is None or src.op != "conv"
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype(np.float32)
    ref = np.array(model(mx.array(x)))
    assert _rel(graph.run(x)[0], ref) < 1e-5
    nchw = to_channels_first(graph)
    assert "transpose" not in nchw.op_counts()
    assert _rel(nchw.run(x.transpose(0, 3, 1, 2))[0], ref) < 1e-5


def test_avg_pool_counts_padding_like_mlx():
    pool = nn.AvgPool2d(3, 2, padding=1)
    graph = to_channels_first(trace(pool, mx.zeros((1, 7, 7, 2))))
    assert graph.op_counts() == {"pool": 1, "transpose": 1}
    x = np.random.default_rng(2).standard_normal((2, 7, 7, 2)).astype(np.float32)
    assert _rel(graph.run(x.transpose(0, 3, 1, 2))[0], np.array(pool(mx.array(x)))) < 1e-6


def test_plain_function_and_fixed_batch():
    def fn(x):
        return mx.softmax(x.reshape(x.shape[0] * 2, -1), axis=-1)

    graph = trace(fn, mx.zeros((2, 6)))
    assert graph.dynamic_batch and graph.values[graph.outputs[0]].dyn == (True, False)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert _rel(graph.run(x)[0], np.array(fn(mx.array(x)))) < 1e-6

    def batch_constant(x):
        return x + mx.array(np.arange(x.size, dtype=np.float32).reshape(x.shape))

    graph = trace(batch_constant, mx.zeros((2, 6)))
    assert not graph.dynamic_batch  # the constant depends on the batch size
    assert _rel(graph.run(x)[0], np.array(batch_constant(mx.array(x)))) < 1e-6


def test_unsupported_primitive_names_it_and_the_layer():
    model = Sorter().eval()
    with pytest.raises(UnsupportedPrimitiveError, match=r"Sort.*layer block \(SortBlock\)"):
        trace(model, mx.zeros((1, 8, 8, 3)))
    with pytest.raises(UnsupportedPrimitiveError, match="supported primitives: .*Convolution"):
        trace(model, mx.zeros((1, 8, 8, 3)))


def test_training_mode_is_refused():
    model = mixed_net().train()
    with pytest.raises(TrainingModeError, match=r"model\.eval\(\)"):
        trace(model, mx.zeros((1, 16, 16, 3)))


def test_bad_inputs():
    with pytest.raises(TypeError, match="model_or_fn"):
        trace(42, mx.zeros((1, 4)))
    with pytest.raises(ValueError, match="example_input"):
        trace(lambda x: x * 2, mx.array(1.0))
