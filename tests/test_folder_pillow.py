"""ImageFolder's Pillow decoder agrees with its mlx-data decoder."""

import tarfile

import numpy as np
import pytest

from mlxvision.data import ImageFolder

Image = pytest.importorskip("PIL.Image")


def _write_images(root, fmt):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            size = (20 + 4 * i, 16 + 2 * c)
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{fmt}")


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("as_tar", [False, True])
def test_pillow_and_mlx_data_decode_alike(tmp_path, fmt, as_tar):
    pytest.importorskip("mlx.data")
    _write_images(tmp_path / "images", fmt)
    root = tmp_path / "images"
    if as_tar:
        root = tmp_path / "images.tar"
        with tarfile.open(root, "w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(tmp_path / "images", arcname="images")
    by_pillow = ImageFolder(root, image_size=16, decoder="pillow").to_arrays()
    by_mlx = ImageFolder(root, image_size=16, decoder="mlx-data").to_arrays()
    assert by_pillow.images.shape == by_mlx.images.shape == (6, 16, 16, 3)
    assert by_pillow.labels.tolist() == by_mlx.labels.tolist() == [0, 0, 0, 1, 1, 1]
    diff = np.abs(by_pillow.images.astype(int) - by_mlx.images.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8  # resampling and decoders differ


def test_pillow_decoder_names_a_corrupt_file(tmp_path):
    _write_images(tmp_path, "png")
    (tmp_path / "dog" / "1.png").write_bytes(b"not a png")
    folder = ImageFolder(tmp_path, decoder="pillow")
    with pytest.raises(ValueError, match=r"dog/1\.png: cannot decode the image"):
        folder.to_arrays()


def test_unknown_decoder_is_refused(tmp_path):
    _write_images(tmp_path, "png")
    with pytest.raises(ValueError, match="decoder: expected 'auto', 'mlx-data' or 'pillow'"):
        ImageFolder(tmp_path, decoder="opencv")


@pytest.mark.realdata
def test_pillow_decodes_the_cifar_test_archive_like_mlx_data(data_root):
    pytest.importorskip("mlx.data")
    archive = data_root / "cifar10-jpeg" / "test.tar"
    by_pillow = ImageFolder(archive, decoder="pillow").to_arrays()
    by_mlx = ImageFolder(archive, decoder="mlx-data").to_arrays()
    assert by_pillow.images.shape == (10000, 32, 32, 3)
    assert np.array_equal(by_pillow.labels, by_mlx.labels)
    assert np.abs(by_pillow.images.astype(int) - by_mlx.images.astype(int)).mean() < 0.5
