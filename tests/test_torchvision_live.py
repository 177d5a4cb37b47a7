"""Live comparison with torchvision: random-weight torchvision models, converted, give the same
logits in MLX as in PyTorch.

Skipped unless both torch and torchvision import. Every weight, bias and BatchNorm buffer is
random (BatchNorm and LayerNorm affine parameters, running means and variances, biases,
ConvNeXt's layer scale are redrawn, not left at their identity-like defaults), and the running
statistics are scaled to the activations so that the logits depend on the input and on every
layer: each value the conversion moves shows up in the logits. Both frameworks run float32 on
the CPU. The measure is the relative error ``max|ours - torch| / max|torch|`` over the logits,
which must be at most 1e-4.
"""

import mlx.core as mx
import numpy as np
import pytest

from mlxvision.models import convert_torch_state_dict

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

TOLERANCE = 1e-4
NUM_CLASSES = 10
# Neither side a multiple of 32 and not square: odd feature maps after strided convolutions and
# pools, and the general (non-repeating) case of VGG's adaptive pool to 7×7.
INPUT_SHAPE = (2, 3, 72, 88)
VGG_HIDDEN = 256  # torchvision's 4096-wide VGG head would only make the test slow

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "vgg11_bn",
    "efficientnet_b0",
    "convnext_tiny",
]


@pytest.fixture
def on_cpu():
    """MLX computes on the CPU (no TF32 on a GPU machine) and picks its CPU convolutions."""
    previous = mx.default_device()
    mx.set_default_device(mx.cpu)
    try:
        yield
    finally:
        mx.set_default_device(previous)


def randomize(model, calibration_images):
    """Redraw, in place from torch's RNG, what torchvision initialises to (near) identity.

    Running statistics are first measured on ``calibration_images`` (one train-mode pass),
    then perturbed: each BatchNorm then normalises to roughly unit variance, so the logits keep
    depending on the input and on every layer. Left at random values unrelated to the
    activations, the statistics shrink the input's signal by orders of magnitude in the deep
    models, and the logits become the classifier's bias.
    """
    nn = torch.nn
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.normal_(0.0, 0.1 if isinstance(module, nn.Conv2d) else 0.01)
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale"):
                parameter.uniform_(0.2, 1.0)
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # running statistics = those of the one batch
        model.train()(calibration_images)
        for norm in norms:
            norm.running_var.mul_(torch.empty_like(norm.running_var).uniform_(0.7, 1.4))
            norm.running_mean.add_(
                0.1 * norm.running_var.sqrt() * torch.randn_like(norm.running_mean)
            )
    return model.eval()


def torchvision_model(name):
    model = torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)
    if name.startswith("vgg"):
        nn = torch.nn
        features = model.classifier[0].in_features
        model.classifier[0] = nn.Linear(features, VGG_HIDDEN)
        model.classifier[3] = nn.Linear(VGG_HIDDEN, VGG_HIDDEN)
        model.classifier[6] = nn.Linear(VGG_HIDDEN, NUM_CLASSES)
    return randomize(model, torch.randn(4, *INPUT_SHAPE[1:]))


@pytest.mark.parametrize("name", MODELS)
def test_converted_torchvision_model_matches_torch(name, on_cpu):
    torch.manual_seed(MODELS.index(name))
    reference = torchvision_model(name)
    images = torch.randn(INPUT_SHAPE)
    with torch.no_grad():
        expected = reference(images).numpy()

    create_kwargs = {"hidden": VGG_HIDDEN} if name.startswith("vgg") else {}
    model = convert_torch_state_dict(name, reference.state_dict(), **create_kwargs)
    assert not model.training
    assert model.num_classes == NUM_CLASSES
    logits = model(mx.array(images.permute(0, 2, 3, 1).numpy()))
    assert logits.dtype == mx.float32
    logits = np.array(logits)

    assert logits.shape == expected.shape == (INPUT_SHAPE[0], NUM_CLASSES)
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.05 * scale, "logits ignore the input"
    error = float(np.abs(logits - expected).max() / scale)
    result = f"{name}: relative error {error:.2e} (max |torch| {scale:.3g})"
    print(result)
    assert error <= TOLERANCE, result
