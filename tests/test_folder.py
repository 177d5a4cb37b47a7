"""ImageFolder: class folders of JPEG/PNG files, as a folder or a tar archive, decoded by mlx-data.

References are Pillow's decodes. PNG must match exactly. JPEG decoders may differ slightly (IDCT
and chroma upsampling choices), so JPEG pixels may differ from Pillow's by at most
``JPEG_TOLERANCE`` levels out of 255 (mlx-data's libjpeg and Pillow's agree exactly in practice).
"""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("mlx.data")
Image = pytest.importorskip("PIL.Image")

from mlxvision.data.datasets.folder import ImageFolder  # noqa: E402

JPEG_TOLERANCE = 4
CLASSES = ["ant", "bee", "cat"]  # written in another order below, to check sorting


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth RGB image (JPEG keeps smooth images close to the original)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    channels = [127 + 100 * np.sin(xx / 5 + yy / 7 + p) for p in phase]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **options)


def pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def make_tree(root: Path, sizes=((20, 24),), formats=("png", "jpg")) -> list[Path]:
    """Three classes of images; returns the image paths in the expected sample order."""
    paths = []
    seed = 0
    for name in ["cat", "ant", "bee"]:
        for i, (height, width) in enumerate(sizes):
            for fmt in formats:
                seed += 1
                path = root / name / f"{i:02d}_{fmt}.{fmt}"
                save(path, smooth_image(height, width, seed), quality=95)
                paths.append(path)
    return sorted(paths, key=lambda p: (CLASSES.index(p.parent.name), p.name))


def make_tar(source: Path, archive: Path, top: str = "train", fmt=tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(archive, "w", format=fmt) as tar:
        tar.add(source, arcname=top)
    return archive


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    return root, make_tree(root)


def test_classes_labels_and_samples(tree):
    root, paths = tree
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._00_png.png").write_bytes(b"AppleDouble resource fork, not an image")
    folder = ImageFolder(root)
    assert folder.classes == CLASSES
    assert folder.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    assert len(folder) == len(paths) == 6
    assert [Path(p) for p, _ in folder.samples] == paths
    assert [label for _, label in folder.samples] == [0, 0, 1, 1, 2, 2]
    assert folder.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_png_pixels_match_pillow_exactly(tmp_path):
    rgb = smooth_image(9, 13, 0)
    rgba = np.dstack([rgb, np.arange(9 * 13, dtype=np.uint8).reshape(9, 13, 1)])
    files = {
        "rgb/a.png": (rgb, None),
        "rgb/b.PNG": (rgb[::-1].copy(), None),
        "grey/a.png": (rgb, "L"),
        "grey/b.png": (rgb, "LA"),
        "alpha/a.png": (rgba, None),
        "alpha/b.png": (rgb, "P"),
    }
    for name, (array, mode) in files.items():
        save(tmp_path / name, array, mode)
    folder = ImageFolder(tmp_path)
    data = folder.to_arrays()
    assert data.images.shape == (6, 9, 13, 3) and data.images.dtype == np.uint8
    for i, (path, _) in enumerate(folder.samples):
        np.testing.assert_array_equal(data.images[i], pillow_rgb(Path(path)), err_msg=path)


def test_jpeg_pixels_close_to_pillow(tmp_path):
    for i in range(4):
        save(tmp_path / f"c{i % 2}" / f"{i}.jpg", smooth_image(16, 12, i), quality=90)
    save(tmp_path / "c0" / "grey.jpeg", smooth_image(16, 12, 9), "L", quality=90)
    folder = ImageFolder(tmp_path)
    images = folder.to_arrays().images
    for i, (path, _) in enumerate(folder.samples):
        difference = np.abs(images[i].astype(int) - pillow_rgb(Path(path)).astype(int))
        assert difference.max() <= JPEG_TOLERANCE, path


def resize_and_crop_reference(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shorter side to max(height, width) (bilinear), then a center crop rounded down."""
    side = max(height, width)
    h, w = array.shape[:2]
    scale = side / min(h, w)
    new_h, new_w = (side, round(w * scale)) if h <= w else (round(h * scale), side)
    resized = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


@pytest.mark.parametrize("image_size", [16, (12, 20)])
def test_images_of_different_sizes_are_resized_and_cropped(tmp_path, image_size):
    sizes = [(30, 40), (40, 30), (16, 16), (10, 25)]  # larger, taller, equal, smaller
    for i, size in enumerate(sizes):
        save(tmp_path / f"c{i % 2}" / f"{i}.png", smooth_image(*size, i))
    folder = ImageFolder(tmp_path, image_size=image_size)
    images = folder.to_arrays().images
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert images.shape == (4, height, width, 3)
    for i, (path, _) in enumerate(folder.samples):
        expected = resize_and_crop_reference(pillow_rgb(Path(path)), height, width)
        difference = np.abs(images[i].astype(int) - expected.astype(int))
        assert difference.mean() < 0.5 and difference.max() <= 4, path


def test_different_sizes_without_image_size_name_the_files(tmp_path):
    save(tmp_path / "a" / "small.png", smooth_image(8, 8, 0))
    save(tmp_path / "b" / "large.png", smooth_image(9, 8, 1))
    with pytest.raises(ValueError, match=r"large\.png: this image is 9×8 .*small\.png.*image_size"):
        ImageFolder(tmp_path).to_arrays()


def test_tar_and_folder_give_the_same_dataset(tree, tmp_path):
    root, _ = tree
    archive = make_tar(root, tmp_path / "train.tar")
    from_folder, from_tar = ImageFolder(root), ImageFolder(archive, num_threads=2)
    assert from_tar.classes == from_folder.classes
    assert [s for s, _ in from_tar.samples] == [
        "train/" + Path(p).relative_to(root).as_posix() for p, _ in from_folder.samples
    ]
    np.testing.assert_array_equal(from_tar.labels, from_folder.labels)
    np.testing.assert_array_equal(from_tar.to_arrays().images, from_folder.to_arrays().images)


def test_tar_written_by_python_default_format(tree, tmp_path):
    root, _ = tree
    archive = make_tar(root, tmp_path / "pax.tar", top=".", fmt=tarfile.PAX_FORMAT)
    folder = ImageFolder(archive)
    assert folder.samples[0] == ("ant/00_jpg.jpg", 0)
    np.testing.assert_array_equal(folder.to_arrays().images, ImageFolder(root).to_arrays().images)


def test_batches_stream_the_same_images_in_the_loader_order(tree):
    root, _ = tree
    folder = ImageFolder(root)
    everything = folder.to_arrays()
    batches = list(folder.batches(4))
    assert [b[0].shape for b in batches] == [(4, 20, 24, 3), (2, 20, 24, 3)]
    assert batches[0][0].dtype == mx.uint8 and batches[0][1].dtype == mx.int32
    np.testing.assert_array_equal(
        np.concatenate([np.array(x) for x, _ in batches]), everything.images
    )

    order = np.random.default_rng([7, 3]).permutation(len(folder))[:4]
    shuffled = list(folder.batches(4, shuffle=True, seed=7, epoch=3, drop_last=True))
    assert len(shuffled) == 1 == folder.num_batches(4, drop_last=True)
    np.testing.assert_array_equal(np.array(shuffled[0][0]), everything.images[order])
    np.testing.assert_array_equal(np.array(shuffled[0][1]), everything.labels[order])


def test_batches_apply_the_transform_with_the_batch_key(tree):
    from mlxvision.data.loader import batch_key

    root, _ = tree
    seen = []

    def transform(images, key=None):
        seen.append(np.array(key))
        return images.astype(mx.float32) / 255

    images, _ = next(ImageFolder(root, transform=transform).batches(2, seed=5, epoch=1))
    assert images.dtype == mx.float32 and float(images.max()) <= 1.0
    np.testing.assert_array_equal(seen[0], np.array(batch_key(5, 1, 0)))


def test_cache_is_used_until_the_archive_changes(tree, tmp_path, monkeypatch):
    root, _ = tree
    archive = make_tar(root, tmp_path / "train.tar")
    cache = tmp_path / "cache"
    decodes = []
    original = ImageFolder._decoded

    def counting(self, *args, **kwargs):
        decodes.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ImageFolder, "_decoded", counting)
    first = ImageFolder(archive, cache=cache).to_arrays()
    assert len(decodes) == 1 and len(list(cache.iterdir())) == 1
    again = ImageFolder(archive, cache=cache).to_arrays()
    assert len(decodes) == 1  # a hit: nothing decoded
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.classes == first.classes

    ImageFolder(archive, cache=cache, image_size=8).to_arrays()
    assert len(decodes) == 2  # another image size is another entry

    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    ImageFolder(archive, cache=cache).to_arrays()
    assert len(decodes) == 3  # a touched archive is decoded again
    assert len(list(cache.iterdir())) == 3
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cache_true_uses_the_environment_folder(tree, tmp_path, monkeypatch):
    root, _ = tree
    monkeypatch.setenv("MLXVISION_CACHE", str(tmp_path / "env-cache"))
    ImageFolder(root, cache=True).to_arrays()
    entries = list((tmp_path / "env-cache" / "imagefolder").iterdir())
    assert len(entries) == 1 and (entries[0] / "images.npy").is_file()


# ------------------------------------------------------------------------------------ errors


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolder(tmp_path / "nothing")


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=r"found no images with the extensions \.jpg"):
        ImageFolder(tmp_path)


def test_images_without_class_folders(tmp_path):
    save(tmp_path / "a.png", smooth_image(4, 4, 0))
    with pytest.raises(ValueError, match="found no class folders"):
        ImageFolder(tmp_path)


def test_images_at_different_depths(tmp_path):
    save(tmp_path / "a" / "x.png", smooth_image(4, 4, 0))
    save(tmp_path / "b" / "deeper" / "y.png", smooth_image(4, 4, 0))
    with pytest.raises(ValueError, match="different depths"):
        ImageFolder(tmp_path)


def test_empty_class_folder(tmp_path):
    save(tmp_path / "a" / "x.png", smooth_image(4, 4, 0))
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="'b' hold no images"):
        ImageFolder(tmp_path)


def test_corrupt_image_is_named(tree, tmp_path):
    root, _ = tree
    (root / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(ValueError, match=r"bee/broken\.png: cannot decode the image"):
        ImageFolder(root).to_arrays()
    archive = make_tar(root, tmp_path / "broken.tar")
    with pytest.raises(ValueError, match=r"broken\.tar:train/bee/broken\.png: cannot decode"):
        list(ImageFolder(archive).batches(4))


def test_truncated_jpeg_in_a_tar_is_refused_up_front(tmp_path):
    save(tmp_path / "src" / "a" / "ok.jpg", smooth_image(32, 32, 0))
    data = (tmp_path / "src" / "a" / "ok.jpg").read_bytes()
    (tmp_path / "src" / "a" / "cut.jpg").write_bytes(data[:100])  # ends inside its headers
    archive = make_tar(tmp_path / "src", tmp_path / "cut.tar")
    with pytest.raises(ValueError, match=r"cut\.tar:train/a/cut\.jpg: corrupt JPEG"):
        ImageFolder(archive)


def test_jpeg_cut_inside_its_image_data_does_not_hang(tmp_path):
    save(tmp_path / "src" / "a" / "x.jpg", smooth_image(64, 64, 0), quality=95)
    data = (tmp_path / "src" / "a" / "x.jpg").read_bytes()
    (tmp_path / "src" / "a" / "x.jpg").write_bytes(data[: len(data) - 200])
    archive = make_tar(tmp_path / "src", tmp_path / "cut.tar")
    code = (
        "import mlxvision\n"
        "from mlxvision.data.datasets.folder import ImageFolder\n"
        f"print(ImageFolder({str(archive)!r}).to_arrays().images.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "(1, 64, 64, 3)" in result.stdout


def test_archive_errors(tmp_path):
    with pytest.raises(ValueError, match="gzip-compressed"):
        ImageFolder(_write(tmp_path / "a.tar.gz", b"\x1f\x8b\x08" + bytes(600)))
    with pytest.raises(ValueError, match="not a tar archive"):
        ImageFolder(_write(tmp_path / "b.tar", b"hello" * 200))
    long_name = "c" * 120 + "/x.png"
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(4, 4, 0)).save(buffer, "PNG")
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(long_name)
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    with pytest.raises(ValueError, match="PAX extended headers"):
        ImageFolder(tmp_path / "pax.tar")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"extensions": (".webp",)}, "cannot decode '.webp'"),
        ({"extensions": ("jpg",)}, "expected strings such as '.jpg'"),
        ({"extensions": ()}, "at least one extension"),
        ({"image_size": 0}, "positive sizes"),
        ({"image_size": (8, 8, 3)}, r"an int or \(height, width\)"),
        ({"num_threads": 0}, "num_threads"),
        ({"cache": 3}, "cache"),
    ],
)
def test_bad_arguments(tree, arguments, message):
    root, _ = tree
    with pytest.raises(ValueError, match=message):
        ImageFolder(root, **arguments)


def test_missing_mlx_data_says_how_to_install(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setitem(sys.modules, "mlx.data", None)
    with pytest.raises(ImportError, match="pip install mlx-data"):
        ImageFolder(root, decoder="mlx-data")
    assert ImageFolder(root).decoder == "pillow"  # the automatic fallback
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"install mlx-data .* or Pillow"):
        ImageFolder(root)


# ------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_cifar10_jpeg_test_archive(data_root):
    archive = data_root / "cifar10-jpeg" / "test.tar"
    folder = ImageFolder(archive)
    assert folder.classes == [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    data = folder.to_arrays()
    assert data.images.shape == (10_000, 32, 32, 3) and data.images.dtype == np.uint8
    assert np.bincount(data.labels).tolist() == [1000] * 10
    with tarfile.open(archive) as tar:
        for index in [0, 4321, 9999]:
            name, label = folder.samples[index]
            assert name.split("/")[1] == folder.classes[label]
            with Image.open(tar.extractfile(name)) as image:
                expected = np.asarray(image.convert("RGB")).astype(int)
            assert np.abs(data.images[index].astype(int) - expected).max() <= JPEG_TOLERANCE
