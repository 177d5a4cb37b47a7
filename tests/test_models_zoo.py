"""The model zoo: parameter counts, forward passes, dtypes, compile, cards, fine-tuning helpers."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

import mlxvision
from mlxvision import ops
from mlxvision.checkpoint import CheckpointError
from mlxvision.models import (
    count_multiply_adds,
    count_parameters,
    create_model,
    list_models,
    model_card,
)
from mlxvision.models.fastnet import FastNet
from mlxvision.models.layers import StochasticDepth, adaptive_avg_pool2d, make_divisible
from mlxvision.models.resnet import PadShortcut
from mlxvision.ops import use_fast_layers

# torchvision's counts (weights only, no buffers) at its defaults (1000 classes); timm's for ViT.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 2_542_856,
    "mobilenet_v3_large": 5_483_032,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "convnext_tiny": 28_589_128,
    "efficientnet_b0": 5_288_548,
    "vit_tiny": 5_717_416,
    "vit_small": 22_050_664,
}
# CIFAR models at 10 classes: the counts of the common PyTorch implementations (CIFAR ResNets
# with option-A shortcuts: 0.27M/0.46M/0.66M/0.85M/1.7M as in He et al.; WRN-28-10: 36.5M).
CIFAR_PARAMS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "preact_resnet18": 11_172_170,
    "wide_resnet28_10": 36_479_194,
    "airbench_net": 1_972_792,
}
ZOO = sorted(TORCHVISION_PARAMS) + sorted(CIFAR_PARAMS)
# Arguments that make each model take a 32×32 image cheaply; every model still runs its own code.
SMALL_INPUT_KWARGS = {
    "vit_tiny": {"img_size": 32, "patch_size": 4},
    "vit_small": {"img_size": 32, "patch_size": 4},
    **{name: {"hidden": 64} for name in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")},
}


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count_matches_reference(name):
    expected = {**TORCHVISION_PARAMS, **CIFAR_PARAMS}[name]
    assert count_parameters(create_model(name)) == expected


def test_every_registered_model_is_covered():
    ours = {n for n in list_models() if model_card(n).builder.__module__.startswith("mlxvision.")}
    assert ours - {"simple_cnn"} == set(ZOO)


def test_classifier_head_size_follows_num_classes():
    # a different class count changes only the head: (in_features + 1) · Δclasses
    base = count_parameters(create_model("resnet50"))
    assert count_parameters(create_model("resnet50", num_classes=10)) == base - 2049 * 990


def test_cifar_stem_replaces_only_the_first_convolution():
    full = count_parameters(create_model("resnet18"))
    cifar = count_parameters(create_model("resnet18", cifar_stem=True))
    assert full - cifar == 64 * 3 * (7 * 7 - 3 * 3)


@pytest.mark.parametrize("name", ZOO)
def test_forward_small_input_float32(name):
    model = create_model(name, num_classes=7, **SMALL_INPUT_KWARGS.get(name, {})).eval()
    x = mx.array(np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32))
    y = model(x)
    assert y.shape == (1, 7) and y.dtype == mx.float32
    assert np.isfinite(np.array(y)).all()


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v3_small"])
def test_eval_mode_samples_are_independent(name):
    # BatchNorm must use running statistics in eval mode: a sample's logits do not depend on
    # the rest of the batch
    model = create_model(name, num_classes=5).eval()
    x = mx.array(np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32))
    together = np.array(model(x))
    alone = np.concatenate([np.array(model(x[i : i + 1])) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "airbench_net"])
def test_bfloat16_and_compile(name):
    model = create_model(name, num_classes=10).eval()
    x = mx.array(np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32))
    reference = np.array(model(x))
    model.set_dtype(mx.bfloat16)
    assert all(v.dtype == mx.bfloat16 for _, v in tree_flatten(model.parameters()))
    y = mx.compile(model)(x.astype(mx.bfloat16))
    assert y.dtype == mx.bfloat16
    error = np.abs(np.array(y.astype(mx.float32)) - reference).max()
    assert error <= 0.05 * np.abs(reference).max()


def test_stochastic_depth_under_compile_draws_fresh_masks():
    # compiled with the random state as input and output, as the engine's training step is
    drop = StochasticDepth(0.5)
    step = mx.compile(drop, inputs=[mx.random.state], outputs=[mx.random.state])
    x = mx.ones((64, 2))
    first, second = np.array(step(x)), np.array(step(x))
    assert set(np.unique(first)) <= {0.0, 2.0} and not np.array_equal(first, second)


def test_wrong_channel_count_fails_before_any_layer():
    model = create_model("resnet18", num_classes=10)
    with pytest.raises(
        ValueError, match=r"expected images of shape \(N, H, W, 3\).*\(1, 32, 32, 1\)"
    ):
        model(mx.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        create_model("mobilenet_v2", in_channels=1)(mx.zeros((2, 32, 32, 3)))


def test_in_channels_changes_the_stem():
    model = create_model("mobilenet_v3_small", num_classes=4, in_channels=1).eval()
    assert model(mx.zeros((1, 32, 32, 1))).shape == (1, 4)


def test_vit_rejects_other_image_sizes():
    model = create_model("vit_tiny", img_size=32, patch_size=4)
    with pytest.raises(ValueError, match="built for 32×32"):
        model(mx.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("vit_tiny", img_size=30, patch_size=4)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean.*resnet18"):
        create_model("resnet81")


# --- model cards ------------------------------------------------------------------------------


def cifar_resnet_macs(depth, classes=10):
    """Independent count: 3×3 convolutions at 32, 16, 8 pixels, no shortcut convolutions."""
    n = (depth - 2) // 6
    macs = 32 * 32 * 16 * 3 * 9
    for size, c_in, c in ((32, 16, 16), (16, 16, 32), (8, 32, 64)):
        macs += size * size * c * c_in * 9 + size * size * c * c * 9
        macs += (n - 1) * 2 * size * size * c * c * 9
    return macs + 64 * classes


def test_card_counts_parameters_and_multiply_adds():
    card = model_card("resnet20")
    assert card.input_size == (32, 32)
    assert card.params == CIFAR_PARAMS["resnet20"]
    assert card.macs == cifar_resnet_macs(20)
    assert "He et al." in card.paper
    assert str(card).startswith("resnet20: 0.27 M parameters, 40.6 M multiply-adds at 32×32")


@pytest.mark.parametrize(("name", "gmacs"), [("resnet18", 1.81), ("mobilenet_v2", 0.30)])
def test_card_multiply_adds_match_torchvision_tables(name, gmacs):
    # torchvision's documented "GFLOPS" (multiply-adds) at 224×224
    assert model_card(name).macs / 1e9 == pytest.approx(gmacs, abs=0.005)


def test_multiply_adds_of_depthwise_convolution_and_linear():
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_multiply_adds(depthwise, (2, 5, 5, 8)) == 2 * 5 * 5 * 8 * 9
    assert count_multiply_adds(nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)), (3, 6)) == 3 * 32


# --- fine-tuning ------------------------------------------------------------------------------


def test_reset_classifier_keeps_backbone_and_updates_spec():
    model = create_model("mobilenet_v3_small", num_classes=1000)
    backbone = model.features.layers[0].layers[0].weight
    model.reset_classifier(4)
    assert model.num_classes == 4 and model.spec.kwargs["num_classes"] == 4
    assert model.get_classifier().weight.shape == (4, 1024)
    assert model.features.layers[0].layers[0].weight is backbone
    assert model.eval()(mx.zeros((1, 32, 32, 3))).shape == (1, 4)


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = create_model("resnet18", num_classes=10).freeze_backbone()
    trainable = dict(tree_flatten(model.trainable_parameters()))
    assert sorted(trainable) == ["fc.bias", "fc.weight"]
    model.unfreeze()
    assert count_parameters(model, trainable_only=True) == count_parameters(model)


def test_classifier_filter_gives_the_head_its_own_learning_rate():
    model = create_model("resnet20", num_classes=10)
    before = dict(tree_flatten(model.parameters()))
    opt = optim.MultiOptimizer(
        [optim.SGD(learning_rate=1.0), optim.SGD(learning_rate=0.0)],
        [model.is_classifier_parameter],
    )
    grads = tree_map(mx.ones_like, model.trainable_parameters())
    opt.update(model, grads)
    after = dict(tree_flatten(model.parameters()))
    for key in ("linear.weight", "linear.bias"):
        np.testing.assert_allclose(np.array(after[key]), np.array(before[key]) - 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.array(after["conv1.weight"]), np.array(before["conv1.weight"]))
    assert set(model.classifier_parameters()) == {"weight", "bias"}


def test_pretrained_loads_a_saved_model(tmp_path):
    model = create_model("resnet20", num_classes=10).eval()
    path = mlxvision.save(model, tmp_path / "r20")
    loaded = create_model("resnet20", num_classes=10, pretrained=path)
    assert "pretrained" not in loaded.spec.kwargs and not loaded.training
    x = mx.ones((1, 32, 32, 3))
    np.testing.assert_array_equal(np.array(loaded(x)), np.array(model(x)))
    with pytest.raises(CheckpointError, match=r"linear\.weight"):
        create_model("resnet20", num_classes=3, pretrained=path)


# --- layers -----------------------------------------------------------------------------------


def test_adaptive_avg_pool_matches_torch_bins():
    x = np.random.default_rng(4).normal(size=(2, 10, 9, 3)).astype(np.float32)
    expected = np.zeros((2, 7, 7, 3), np.float32)
    for i in range(7):
        for j in range(7):
            h0, h1 = i * 10 // 7, -(-(i + 1) * 10 // 7)
            w0, w1 = j * 9 // 7, -(-(j + 1) * 9 // 7)
            expected[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    np.testing.assert_allclose(np.array(adaptive_avg_pool2d(mx.array(x), (7, 7))), expected, 1e-5)
    one = np.array(adaptive_avg_pool2d(mx.array(x[:, :1, :1]), (7, 7)))
    np.testing.assert_allclose(one, np.broadcast_to(x[:, :1, :1], (2, 7, 7, 3)))
    small = x[:, :2, :3]  # output a multiple of the input: each pixel repeated
    repeated = np.array(adaptive_avg_pool2d(mx.array(small), (6, 6)))
    np.testing.assert_array_equal(repeated, small.repeat(3, axis=1).repeat(2, axis=2))


def test_option_a_shortcut_subsamples_and_pads_channels():
    x = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4)
    y = np.array(PadShortcut(4)(mx.array(x)))
    expected = np.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
    np.testing.assert_array_equal(y, expected)


def test_stochastic_depth_drops_whole_samples():
    drop = StochasticDepth(0.5)
    x = mx.ones((400, 3))
    y = np.array(drop(x))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert (y == y[:, :1]).all()  # a sample is kept or dropped as a whole
    assert 0.35 < (y[:, 0] > 0).mean() < 0.65
    np.testing.assert_array_equal(np.array(drop.eval()(x)), np.ones((400, 3)))


def test_make_divisible_matches_mobilenet_rule():
    assert [make_divisible(v) for v in (32 * 0.75, 24 * 0.5, 1280, 4.0)] == [24, 16, 1280, 8]
    assert make_divisible(240 // 4) == 64  # MobileNetV3 squeeze width for 240 channels


def test_airbench_whitening_decorrelates_patches():
    images = np.random.default_rng(5).random((16, 12, 12, 3))
    images[..., 1] = 0.7 * images[..., 0] + 0.3 * images[..., 1]  # correlated channels
    model = FastNet().init_whitening(images, eps=1e-8)
    out = np.array(model.whiten(mx.array(images.astype(np.float32)))).reshape(-1, 24)
    moment = out[:, :12].T @ out[:, :12] / len(out)
    np.testing.assert_allclose(moment, np.eye(12), atol=2e-3)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-5)


@pytest.mark.parametrize("activation, fast", [("gelu", ops.GELU), ("relu", ops.ReLU)])
def test_airbench_activations_are_layers_that_take_the_fast_forms(activation, fast):
    """FastNet's activations are layers, so create_model gives them the package's forms (on
    the CPU a GELU without MLX's erf); the outputs stay MLX's within the forms' tolerance."""
    model = create_model("airbench_net", num_classes=10, widths=(8, 16, 16), activation=activation)
    layers = [model.activation, *(group.activation for group in model.blocks.layers)]
    assert all(type(layer) is fast for layer in layers)
    x = mx.random.normal((2, 16, 16, 3))
    for train in (True, False):
        model.train(train)
        got = model(x)
        use_fast_layers(model, enabled=False)
        expected = model(x)
        use_fast_layers(model)
        np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-4, atol=1e-5)


def test_simple_cnn_pools_before_relu_like_the_tutorial_order():
    """ReLU after max-pooling gives the outputs and gradients of the tutorial's relu-then-pool."""
    from mlxvision.models.cnn import SimpleCNN

    mx.random.seed(5)
    model = SimpleCNN(num_classes=4, in_channels=2, input_size=8)
    x = mx.random.normal((3, 8, 8, 2))
    pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def tutorial(params, x):
        model.update(params)
        h = pool(nn.relu(model.conv1(x)))
        h = pool(nn.relu(model.conv2(h)))
        return model.fc2(nn.relu(model.fc1(h.reshape(h.shape[0], -1))))

    def ours(params, x):
        model.update(params)
        return model(x)

    params = model.trainable_parameters()
    cotangent = mx.random.normal((3, 4))
    expected, got = tutorial(params, x), ours(params, x)
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-6, atol=1e-6)
    expected_grads = mx.grad(lambda p: (tutorial(p, x) * cotangent).sum())(params)
    got_grads = mx.grad(lambda p: (ours(p, x) * cotangent).sum())(params)
    model.update(params)
    assert len(tree_flatten(got_grads)) == 8
    for (name, a), (_, b) in zip(
        tree_flatten(expected_grads), tree_flatten(got_grads), strict=True
    ):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-6, err_msg=name)
