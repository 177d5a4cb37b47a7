import gzip
from importlib import resources

import numpy as np
import pytest

from mlxvision.data import ArrayDataset, Digits


def test_digits_splits_shapes_and_values():
    train, test = Digits(train=True), Digits(train=False)
    assert (len(train), len(test)) == (1437, 360)
    assert train.image_shape == test.image_shape == (8, 8, 1)
    assert train.images.dtype == np.uint8 and train.images.max() == 255
    assert train.classes == [str(d) for d in range(10)]
    assert np.bincount(test.labels, minlength=10).min() >= 30  # every digit is tested


def test_digits_pixels_follow_the_csv_exactly():
    raw = resources.files("mlxvision.data.datasets").joinpath("digits/digits.csv.gz").read_bytes()
    first = gzip.decompress(raw).decode().splitlines()[0].split(",")
    values = np.array(first, dtype=np.int64)
    train = Digits(train=True)
    np.testing.assert_array_equal(train.images[0].reshape(-1), np.rint(values[:64] * 255 / 16))
    assert train.labels[0] == values[64] == 0
    image, label = train[0]
    assert image.shape == (8, 8, 1) and label == 0


def test_digits_normalization_constants_describe_the_train_split():
    x = Digits(train=True).images / 255.0
    assert Digits.mean[0] == pytest.approx(x.mean(), abs=1e-3)
    assert Digits.std[0] == pytest.approx(x.std(), abs=1e-3)


def test_array_dataset_validates_its_input():
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\)"):
        ArrayDataset(np.zeros((3, 4, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"images: expected an array of shape N×H×W×C"):
        ArrayDataset(np.zeros((3, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"values in \[0, 2\)"):
        ArrayDataset(np.zeros((3, 4, 4)), [0, 1, 2], classes=["a", "b"])
    with pytest.raises(ValueError, match="integers"):
        ArrayDataset(np.zeros((2, 4, 4)), [0.5, 1.0])
    ds = ArrayDataset(np.arange(32).reshape(2, 4, 4), [1, 0])
    assert ds.classes == ["0", "1"] and ds.subset([1]).labels.tolist() == [0]
