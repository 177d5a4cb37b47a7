import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import mlxvision as mv
from mlxvision.export import export_mlxfn, load_mlxfn, read_mlxfn_metadata


def _model():
    mx.random.seed(2)
    return mv.create_model("simple_cnn", num_classes=10, in_channels=3, input_size=16)


def test_mlxfn_round_trip_gives_the_same_outputs(tmp_path):
    model = _model()
    model.train()
    path = export_mlxfn(model, tmp_path / "m", (4, 16, 16, 3), metadata={"classes": ["a"]})
    assert path.suffix == ".mlxfn" and model.training  # mode restored
    x = mx.array(np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32))
    model.eval()
    np.testing.assert_allclose(np.array(load_mlxfn(path)(x)), np.array(model(x)), atol=1e-6)
    assert read_mlxfn_metadata(path) == {"classes": ["a"]}


class ConvMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def __call__(self, x):
        return nn.relu(self.conv(x)).mean(axis=(1, 2))


def test_shapeless_export_accepts_other_batch_sizes(tmp_path):
    model = ConvMean()
    path = export_mlxfn(model, tmp_path / "m.mlxfn", (1, 16, 16, 3), shapeless=True)
    f = load_mlxfn(path)
    for n in (1, 3, 7):
        x = mx.random.normal((n, 16, 16, 3))
        np.testing.assert_allclose(np.array(f(x)), np.array(model(x)), atol=1e-6)


def test_shapeless_export_is_refused_where_the_graph_bakes_the_batch_size(tmp_path):
    with pytest.raises(ValueError, match="shapeless export of SimpleCNN does not work"):
        export_mlxfn(_model(), tmp_path / "m", (2, 16, 16, 3), shapeless=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_shape_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="received shape"):
        export_mlxfn(_model(), tmp_path / "m", (1, 16, 16, 1))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        export_mlxfn(_model(), tmp_path / "m", (16, 16, 3))
    assert list(tmp_path.iterdir()) == []


def test_loading_a_missing_or_bad_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such .mlxfn"):
        load_mlxfn(tmp_path / "none.mlxfn")
    bad = tmp_path / "bad.mlxfn"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.mlxfn"):
        load_mlxfn(bad)
