import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.models import SimpleCNN, count_parameters, model_card


def test_create_model_records_its_spec():
    model = mv.create_model("simple_cnn", num_classes=7, in_channels=1, input_size=8)
    assert isinstance(model, SimpleCNN)
    assert model.spec.name == "simple_cnn"
    assert model.spec.kwargs == {"num_classes": 7, "in_channels": 1, "input_size": 8}
    assert model(mx.zeros((3, 8, 8, 1))).shape == (3, 7)


def test_simple_cnn_matches_the_tutorial_layout():
    model = SimpleCNN(num_classes=10, in_channels=3, input_size=32)
    # conv 3->64, conv 64->128, fc 128*8*8 -> 1024, fc 1024 -> 10, all with biases
    expected = (
        (3 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + (128 * 64 * 1024 + 1024) + (1024 * 10 + 10)
    )
    assert count_parameters(model) == expected
    rect = SimpleCNN(num_classes=5, in_channels=3, input_size=(16, 24))
    assert rect.fc1.weight.shape == (1024, 128 * 4 * 6)
    assert rect(mx.zeros((2, 16, 24, 3))).shape == (2, 5)


def test_simple_cnn_forward_matches_numpy_reference():
    model = SimpleCNN(num_classes=4, in_channels=2, input_size=4, hidden=6)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype(np.float32)
    got = np.array(model(mx.array(x)))

    def conv(x, w, b):  # NHWC input, OHWI weight, 3x3, padding 1
        xp = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
        out = np.zeros((*x.shape[:3], w.shape[0]), np.float64)
        for i in range(3):
            for j in range(3):
                patch = xp[:, i : i + x.shape[1], j : j + x.shape[2], :]
                out += patch @ w[:, i, j, :].T
        return out + b

    def pool(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    p = {k: np.array(v) for k, v in dict(mlx_flatten(model.parameters())).items()}
    h = pool(np.maximum(conv(x, p["conv1.weight"], p["conv1.bias"]), 0))
    h = pool(np.maximum(conv(h, p["conv2.weight"], p["conv2.bias"]), 0))
    h = np.maximum(h.reshape(2, -1) @ p["fc1.weight"].T + p["fc1.bias"], 0)
    ref = h @ p["fc2.weight"].T + p["fc2.bias"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def mlx_flatten(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def test_unknown_model_lists_known_ones_and_suggests_close_matches():
    with pytest.raises(ValueError) as err:
        mv.create_model("simple_cn")
    message = str(err.value)
    assert "simple_cn" in message and "Did you mean simple_cnn" in message
    assert "Known models:" in message and "simple_cnn" in message.split("Known models:")[1]


def test_wrong_channel_count_names_expected_and_received_shapes():
    model = mv.create_model("simple_cnn", num_classes=10, in_channels=3, input_size=32)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*received shape \(2, 32, 32, 1\)"):
        model(mx.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"built for images of 32×32.*\(2, 16, 16, 3\)"):
        model(mx.zeros((2, 16, 16, 3)))
    with pytest.raises(TypeError, match="ToTensor"):
        model(mx.zeros((2, 32, 32, 3), dtype=mx.uint8))


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="divisible by 4"):
        SimpleCNN(input_size=30)
    with pytest.raises(ValueError, match="num_classes"):
        SimpleCNN(num_classes=0)


def test_list_models_filters_by_pattern_and_cards_describe_models():
    assert "simple_cnn" in mv.list_models()
    assert mv.list_models("simple_*") == ["simple_cnn"]
    assert mv.list_models("no_such_*") == []
    card = model_card("simple_cnn")
    assert card.input_size == (32, 32) and card.paper


def test_count_parameters_skips_batchnorm_statistics_and_frozen_on_request():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm(4))
    assert count_parameters(model) == 3 * 9 * 4 + 4 + 4
    model.layers[0].freeze()
    assert count_parameters(model, trainable_only=True) == 8
