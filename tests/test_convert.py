"""Converting PyTorch state dicts: golden torchvision fixtures, name mapping, error messages."""

import json
import os
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxvision.models import (
    ConversionError,
    ConvNeXt,
    convert_torch_state_dict,
    count_parameters,
    create_model,
    map_torch_state_dict,
    torch_name,
)

FIXTURES = Path(
    os.environ.get(
        "MLXVISION_FIXTURES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "torchvision",
    )
)
FIXTURE_MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]


def load_fixture(name):
    index_path = FIXTURES / "index.json"
    if not index_path.is_file():
        pytest.skip(f"no torchvision fixtures at {FIXTURES} (set MLXVISION_FIXTURES)")
    info = json.loads(index_path.read_text())[name]
    state = {}
    for part in info["state_dict_parts"]:
        with np.load(FIXTURES / part) as arrays:
            state.update({key: arrays[key] for key in arrays.files})
    images, logits = state.pop("__input_nchw"), state.pop("__logits")
    state = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in state.items()}
    return info, state, images, logits


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_torchvision_fixture_logits(name):
    info, state, images, expected = load_fixture(name)
    model = convert_torch_state_dict(name, state)  # num_classes read from the state dict
    assert not model.training
    assert model.num_classes == info["kwargs"]["num_classes"]
    assert count_parameters(model) == info["params"]
    logits = np.array(model(mx.array(images.transpose(0, 2, 3, 1))))
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-4


def test_torch_name_drops_sequential_layers_only():
    assert (
        torch_name("features.layers.3.block.layers.1.fc1.weight") == "features.3.block.1.fc1.weight"
    )
    assert torch_name("layer1.layers.0.downsample.layers.1.running_mean") == (
        "layer1.0.downsample.1.running_mean"
    )
    assert torch_name("layers.weight") == "layers.weight"


def torch_state_dict(model):
    """Our weights in PyTorch's names and layout (OIHW convolutions), with BN counters."""
    state = {}
    for name, value in tree_flatten(model.parameters()):
        array = np.array(value)
        state[torch_name(name)] = array.transpose(0, 3, 1, 2) if array.ndim == 4 else array
        if name.endswith("running_var"):
            state[torch_name(name).replace("running_var", "num_batches_tracked")] = np.array(7)
    return state


def test_round_trip_through_torch_layout():
    source = create_model("resnet20", num_classes=10)
    model = convert_torch_state_dict("resnet20", torch_state_dict(source))
    for (key, a), (key_b, b) in zip(
        tree_flatten(source.parameters()), tree_flatten(model.parameters()), strict=True
    ):
        assert key == key_b
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_layer_scale_loses_torch_singleton_axes():
    source = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=5)
    state = torch_state_dict(source)
    assert state["features.1.0.layer_scale"].shape == (8,)
    state = {k: v.reshape(-1, 1, 1) if k.endswith("layer_scale") else v for k, v in state.items()}
    target = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=5)
    model = convert_torch_state_dict(target, state)
    x = mx.ones((1, 32, 32, 3))
    np.testing.assert_allclose(np.array(model(x)), np.array(source.eval()(x)), rtol=1e-5)


def test_data_parallel_prefix_is_accepted():
    state = {f"module.{k}": v for k, v in torch_state_dict(create_model("resnet20")).items()}
    assert convert_torch_state_dict("resnet20", state).num_classes == 10


def test_errors_name_every_bad_key():
    model = create_model("resnet20", num_classes=10)
    state = torch_state_dict(model)
    del state["layer2.1.bn1.running_mean"]
    state["layer9.0.conv1.weight"] = np.zeros((3, 3, 3, 3))
    state["layer3.0.conv1.weight"] = np.zeros((64, 32, 5, 5))
    del state["linear.bias"]
    with pytest.raises(ConversionError) as info:
        map_torch_state_dict(model, state)
    message = str(info.value)
    assert "missing (2): " in message and "unexpected (1): " in message
    for key in ("layer2.1.bn1.running_mean (32,)", "linear.bias (10,)", "layer9.0.conv1.weight"):
        assert key in message
    assert "layer3.0.conv1.weight: state dict has (64, 32, 5, 5)" in message
    assert "needs (64, 32, 3, 3)" in message


def test_create_kwargs_only_with_a_name():
    with pytest.raises(TypeError, match="model name"):
        convert_torch_state_dict(create_model("resnet20"), {}, num_classes=3)
