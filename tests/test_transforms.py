"""Device batch transforms against NumPy references and statistical checks of their randomness."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlxvision  # noqa: F401  (loads the BLAS that mlx.core needs first)
from mlxvision.data import transforms as T

KEY = mx.random.key(1234)


def np_of(params) -> list[np.ndarray | None]:
    return [None if p is None else np.array(p) for p in params]


def random_images(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape).astype(dtype)


# ---- NumPy references ------------------------------------------------------------------------


def np_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PyTorch's interpolate(mode="bilinear", align_corners=False, antialias=False) of H×W×C."""
    image = image.astype(np.float64)
    height, width = image.shape[:2]
    out = np.zeros((out_h, out_w, image.shape[2]))
    for oy in range(out_h):
        sy = max((oy + 0.5) * height / out_h - 0.5, 0.0)
        y0 = int(sy)
        y1 = y0 + 1 if y0 < height - 1 else y0
        ly = sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * width / out_w - 0.5, 0.0)
            x0 = int(sx)
            x1 = x0 + 1 if x0 < width - 1 else x0
            lx = sx - x0
            top = (1 - lx) * image[y0, x0] + lx * image[y0, x1]
            bottom = (1 - lx) * image[y1, x0] + lx * image[y1, x1]
            out[oy, ox] = (1 - ly) * top + ly * bottom
    return out


def np_rrc_box(height, width, scale, ratio, rng) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, one image, NumPy random numbers."""
    for _ in range(10):
        target = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    raise AssertionError("the test's settings should always find a box")


def np_grey(image: np.ndarray) -> np.ndarray:
    if image.shape[-1] == 1:
        return image
    return 0.2989 * image[..., :1] + 0.587 * image[..., 1:2] + 0.114 * image[..., 2:3]


def np_jitter(image: np.ndarray, order, factors) -> np.ndarray:
    """torchvision's adjust_brightness / adjust_contrast / adjust_saturation, in ``order``."""
    for which, f in zip(order, factors, strict=True):
        if which == 0:
            other = np.zeros_like(image)
        elif which == 1:
            other = np.full_like(image, np_grey(image).mean())
        else:
            if image.shape[-1] == 1:
                continue
            other = np.broadcast_to(np_grey(image), image.shape)
        image = np.clip(f * image + (1 - f) * other, 0, 1)
    return image


# ---- dtype, normalization, composition -------------------------------------------------------


def test_to_tensor_and_normalize_match_numpy():
    x = random_images((3, 5, 4, 3))
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    t = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    out = np.array(t(mx.array(x)))
    expected = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "transform",
    [
        T.Normalize([0.5], [0.5]),
        T.ColorJitter(brightness=0.5),
        T.RandomErasing(p=1.0, value="random"),
        T.Cutout(2, value="random"),
    ],
)
def test_float_only_transforms_say_so_for_uint8(transform):
    with pytest.raises(TypeError, match="ToTensor"):
        transform(mx.zeros((2, 4, 4, 3), dtype=mx.uint8), key=KEY)


def test_mixup_needs_float_images():
    with pytest.raises(TypeError, match="ToTensor"):
        T.MixUp(1.0, 3)(mx.zeros((2, 4, 4, 3), dtype=mx.uint8), mx.array([0, 1]), key=KEY)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="N×H×W×C"):
        T.RandomCrop(2)(mx.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="larger than"):
        T.RandomCrop(8)(mx.zeros((1, 4, 4, 1)), key=KEY)
    with pytest.raises(ValueError, match="scale"):
        T.RandomResizedCrop(8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="channels"):
        T.ColorJitter(brightness=0.1)(mx.zeros((1, 2, 2, 4)), key=KEY)
    with pytest.raises(TypeError, match="uint8"):
        T.RandomErasing(p=1.0, value=0.5)(mx.zeros((1, 8, 8, 1), dtype=mx.uint8), key=KEY)
    with pytest.raises(ValueError, match="labels"):
        T.CutMix(1.0, 3)(mx.zeros((2, 4, 4, 1)), mx.zeros((3,), dtype=mx.int32), key=KEY)


RANDOM_TRANSFORMS = [
    T.RandomHorizontalFlip(),
    T.RandomVerticalFlip(),
    T.RandomCrop(8, padding=2),
    T.RandomResizedCrop(6),
    T.ColorJitter(0.4, 0.4, 0.4),
    T.RandomErasing(p=0.5, value="random"),
    T.Cutout(3),
]


@pytest.mark.parametrize("transform", RANDOM_TRANSFORMS, ids=lambda t: type(t).__name__)
def test_same_key_same_batch_other_key_other_batch(transform):
    x = mx.array(random_images((16, 8, 8, 3), np.float32))
    a = np.array(transform(x, key=mx.random.key(7)))
    b = np.array(transform(x, key=mx.random.key(7)))
    c = np.array(transform(x, key=mx.random.key(8)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_compose_is_deterministic_and_splits_keys():
    t = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip(), T.ToTensor()])
    x = mx.array(random_images((32, 8, 8, 3)))
    a, b = t(x, key=KEY), t(x, key=KEY)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    keys = mx.random.split(KEY, 3)
    crop = T.RandomCrop(8, padding=2)(x, key=keys[0])
    manual = T.ToTensor()(T.RandomHorizontalFlip()(crop, key=keys[1]))
    np.testing.assert_array_equal(np.array(a), np.array(manual))


# ---- flips -----------------------------------------------------------------------------------


def test_flips_match_numpy():
    x = random_images((64, 5, 6, 3))
    for t, axis in ((T.RandomHorizontalFlip(), 2), (T.RandomVerticalFlip(), 1)):
        params = t.params(x.shape, KEY)
        out = np.array(t.apply(mx.array(x), params))
        flip = np.array(params.flip)
        expected = np.where(flip[:, None, None, None], np.flip(x, axis=axis), x)
        np.testing.assert_array_equal(out, expected)
        assert out.dtype == np.uint8
        assert 0 < flip.sum() < 64


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flip_rate_within_binomial_bound(p):
    n = 20_000
    x = mx.array(np.tile(np.array([0, 1], np.uint8).reshape(1, 1, 2, 1), (n, 1, 1, 1)))
    out = np.array(T.RandomHorizontalFlip(p)(x, key=mx.random.key(3)))
    flipped = int((out[:, 0, 0, 0] == 1).sum())
    assert abs(flipped - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_flip_probability_edges():
    x = mx.array(random_images((8, 4, 4, 1)))
    np.testing.assert_array_equal(np.array(T.RandomHorizontalFlip(0.0)(x, key=KEY)), np.array(x))
    np.testing.assert_array_equal(
        np.array(T.RandomHorizontalFlip(1.0)(x, key=KEY)), np.array(x)[:, :, ::-1]
    )


# ---- crops -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_random_crop_reproduces_numpy_with_same_offsets(mode):
    x = random_images((32, 7, 9, 3))
    t = T.RandomCrop((6, 8), padding=(3, 2), padding_mode=mode, fill=17)
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    top, left = np_of(params)
    widths = ((0, 0), (2, 2), (3, 3), (0, 0))  # (left/right, top/bottom) = (3, 2)
    if mode == "constant":
        padded = np.pad(x, widths, constant_values=17)
    else:
        padded = np.pad(x, widths, mode=mode)
    expected = np.stack(
        [padded[i, top[i] : top[i] + 6, left[i] : left[i] + 8] for i in range(len(x))]
    )
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
    assert top.min() >= 0 and top.max() <= 7 + 4 - 6
    assert left.min() >= 0 and left.max() <= 9 + 6 - 8


def test_random_crop_pad_if_needed():
    x = random_images((4, 5, 5, 1))
    out = T.RandomCrop(8, pad_if_needed=True)(mx.array(x), key=KEY)
    assert out.shape == (4, 8, 8, 1)
    assert int(np.array(out).astype(np.int64).sum()) == int(x.astype(np.int64).sum())


def test_random_crop_offsets_are_uniform_chi_square():
    n, positions = 18_000, 9  # padding 4 around 8×8 crops: 9 places per axis
    t = T.RandomCrop(8, padding=4)
    top, left = np_of(t.params((n, 8, 8, 1), mx.random.key(11)))
    joint = np.bincount(top * positions + left, minlength=positions**2)
    expected = n / positions**2
    chi2 = ((joint - expected) ** 2 / expected).sum()
    assert chi2 < 124.84  # chi-square 99.9% quantile, 80 degrees of freedom
    for axis in (top, left):
        counts = np.bincount(axis, minlength=positions)
        assert ((counts - n / positions) ** 2 / (n / positions)).sum() < 26.12  # 8 dof


@pytest.mark.parametrize(
    ("image", "crop", "top", "left"),
    [((6, 6), (4, 4), 1, 1), ((5, 8), (2, 3), 2, 2), ((7, 4), (2, 1), 2, 2)],
)
def test_center_crop_offsets(image, crop, top, left):
    # torchvision: offset = int(round((H - h) / 2)), Python rounding half to even
    x = random_images((2, *image, 3))
    out = np.array(T.CenterCrop(crop)(mx.array(x)))
    np.testing.assert_array_equal(out, x[:, top : top + crop[0], left : left + crop[1]])


def test_center_crop_pads_small_images():
    x = random_images((1, 2, 3, 1))
    out = np.array(T.CenterCrop((4, 4))(mx.array(x)))
    expected = np.zeros((1, 4, 4, 1), np.uint8)
    expected[:, 1:3, 0:3] = x
    np.testing.assert_array_equal(out, expected)


# ---- resampling ------------------------------------------------------------------------------


def test_bilinear_reference_known_values():
    # Values PyTorch's interpolate(align_corners=False) gives for these 1-D cases.
    row = np.array([0.0, 2.0]).reshape(1, 2, 1)
    np.testing.assert_allclose(np_bilinear(row, 1, 4).ravel(), [0, 0.5, 1.5, 2])
    row = np.array([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1)
    np.testing.assert_allclose(np_bilinear(row, 1, 2).ravel(), [0.5, 2.5])


@pytest.mark.parametrize(
    ("shape", "size"),
    [((9, 7), (16, 11)), ((16, 12), (5, 7)), ((8, 8), (8, 3)), ((1, 5), (3, 4)), ((13, 6), 4)],
)
def test_resize_matches_numpy_bilinear(shape, size):
    x = random_images((3, *shape, 2), np.float32)
    t = T.Resize(size)
    out = np.array(t(mx.array(x)))
    out_h, out_w = t.output_size(*shape)
    assert out.shape == (3, out_h, out_w, 2)
    expected = np.stack([np_bilinear(img, out_h, out_w) for img in x])
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_resize_uint8_rounds_and_keeps_dtype():
    x = random_images((2, 5, 6, 3))
    out = np.array(T.Resize((7, 4))(mx.array(x)))
    assert out.dtype == np.uint8
    expected = np.stack([np_bilinear(img, 7, 4) for img in x])
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-4


def test_resize_shorter_side_and_max_size():
    assert T.Resize(16).output_size(8, 12) == (16, 24)
    assert T.Resize(16).output_size(30, 20) == (24, 16)
    assert T.Resize(16, max_size=20).output_size(8, 12) == (13, 20)
    x = mx.zeros((1, 8, 8, 1))
    assert T.Resize(8)(x) is x


def test_random_resized_crop_reproduces_crop_then_resize():
    x = random_images((12, 20, 15, 3), np.float32)
    t = T.RandomResizedCrop((9, 7))
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    top, left, h, w = np_of(params)
    for i in range(len(x)):
        crop = x[i, top[i] : top[i] + h[i], left[i] : left[i] + w[i]]
        assert crop.shape[:2] == (h[i], w[i])  # the box lies inside the image
        np.testing.assert_allclose(out[i], np_bilinear(crop, 9, 7), atol=2e-5)


def test_random_resized_crop_area_and_ratio_within_range():
    n, height, width = 4000, 64, 48
    scale, ratio = (0.2, 0.6), (0.5, 2.0)
    t = T.RandomResizedCrop(8, scale=scale, ratio=ratio)
    top, left, h, w = np_of(t.params((n, height, width, 3), mx.random.key(5)))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    # Side lengths are rounded to whole pixels: allow half a pixel on each side.
    slack = ((h + 0.5) * (w + 0.5) - h * w) / (height * width)
    assert (area >= scale[0] - slack).all() and (area <= scale[1] + slack).all()
    aspect = w / h
    assert (aspect >= ratio[0] * (1 - 1 / h) - 1e-9).all()
    assert (aspect <= ratio[1] * (1 + 1 / h) + 1e-9).all()
    # The accepted areas follow torchvision's algorithm (tries that do not fit are redrawn).
    rng = np.random.default_rng(0)
    theirs = np.array([np_rrc_box(height, width, scale, ratio, rng) for _ in range(n)])
    reference_area = theirs[:, 2] * theirs[:, 3] / (height * width)
    assert ks_statistic(area, reference_area) < 1.95 * math.sqrt(2 / n)
    # Placement is uniform over the free room: mean relative offset near 1/2.
    room = height - h
    assert abs((top[room > 0] / room[room > 0]).mean() - 0.5) < 0.03


@pytest.mark.parametrize(
    ("image", "ratio", "box"),
    [
        ((10, 16), (1.0, 1.0), (0, 3, 10, 10)),  # too wide: height kept, width = h * max ratio
        ((20, 10), (0.8, 1.25), (4, 0, 12, 10)),  # too tall: h = round(10 / 0.8), half to even
        ((10, 11), (0.8, 1.25), (0, 0, 10, 11)),  # ratio already within: the whole image
    ],
)
def test_random_resized_crop_falls_back_to_center_crop(image, ratio, box):
    # No box of at least 150% of the image fits, so every image gets torchvision's fallback:
    # the central crop with the aspect ratio clamped to `ratio`.
    t = T.RandomResizedCrop(4, scale=(1.5, 2.0), ratio=ratio)
    params = np_of(t.params((5, *image, 1), KEY))
    for value, expected in zip(params, box, strict=True):
        assert (value == expected).all()


def test_random_resized_crop_uint8_keeps_dtype():
    out = T.RandomResizedCrop(5)(mx.array(random_images((3, 12, 12, 3))), key=KEY)
    assert out.dtype == mx.uint8 and out.shape == (3, 5, 5, 3)


# ---- colour ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"brightness": 0.5},
        {"contrast": 0.5},
        {"saturation": (0.0, 2.0)},
        {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
    ],
)
def test_color_jitter_matches_numpy(kwargs):
    x = random_images((24, 5, 4, 3), np.float32)
    t = T.ColorJitter(**kwargs)
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    order, factors = np_of(params)
    expected = np.stack([np_jitter(x[i], order[i], factors[i]) for i in range(len(x))])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert order.shape[1] == len(kwargs)


def test_color_jitter_factors_ranges_and_orders():
    n = 3000
    t = T.ColorJitter(brightness=0.3, contrast=(0.5, 0.7), saturation=0.0)
    order, factors = np_of(t.params((n, 4, 4, 3), KEY))
    assert set(np.unique(order)) == {0, 1}  # saturation 0 is switched off
    brightness = factors[order == 0]
    contrast = factors[order == 1]
    assert brightness.min() >= 0.7 and brightness.max() <= 1.3
    assert contrast.min() >= 0.5 and contrast.max() <= 0.7
    assert abs(brightness.mean() - 1.0) < 0.01
    first_is_brightness = (order[:, 0] == 0).mean()
    assert abs(first_is_brightness - 0.5) < 5 * math.sqrt(0.25 / n)


def test_color_jitter_grey_images():
    x = random_images((6, 4, 4, 1), np.float32)
    t = T.ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5)
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    order, factors = np_of(params)
    expected = np.stack([np_jitter(x[i], order[i], factors[i]) for i in range(len(x))])
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ---- erasing ---------------------------------------------------------------------------------


def np_erase(x, top, left, h, w, fill):
    out = x.copy()
    for i in range(len(x)):
        out[i, top[i] : top[i] + h[i], left[i] : left[i] + w[i]] = (
            fill
            if np.ndim(fill) <= 1
            else fill[i, top[i] : top[i] + h[i], left[i] : left[i] + w[i]]
        )
    return out


def test_random_erasing_matches_numpy_per_channel_value():
    x = random_images((40, 10, 12, 3))
    t = T.RandomErasing(p=0.7, value=(1, 2, 3))
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    top, left, h, w, _ = np_of(params)
    np.testing.assert_array_equal(out, np_erase(x, top, left, h, w, np.array([1, 2, 3])))
    assert out.dtype == np.uint8
    erased = h > 0
    assert 0 < erased.sum() < 40
    assert ((h < 10) & (w < 12)).all()  # torchvision keeps boxes strictly inside the image


def test_random_erasing_random_value_uses_noise():
    x = random_images((8, 6, 6, 2), np.float32)
    t = T.RandomErasing(p=1.0, value="random")
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    top, left, h, w, noise = np_of(params)
    np.testing.assert_allclose(out, np_erase(x, top, left, h, w, noise))


def test_random_erasing_rate_and_area():
    n, height, width = 20_000, 16, 16
    t = T.RandomErasing(p=0.3, scale=(0.1, 0.2), ratio=(0.5, 2.0))
    _, _, h, w, _ = np_of(t.params((n, height, width, 1), mx.random.key(9)))
    erased = h > 0
    assert abs(erased.sum() - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)
    area = h[erased] * w[erased] / (height * width)
    slack = ((h[erased] + 0.5) * (w[erased] + 0.5) - h[erased] * w[erased]) / (height * width)
    assert (area >= 0.1 - slack).all() and (area <= 0.2 + slack).all()


def test_cutout_matches_numpy_and_clips_at_borders():
    n, size = 500, 4
    x = random_images((n, 8, 8, 1), np.float32) + 1.0  # never 0, so erased pixels are known
    t = T.Cutout(size)
    params = t.params(x.shape, KEY)
    out = np.array(t.apply(mx.array(x), params))
    top, left, h, w, _ = np_of(params)
    np.testing.assert_array_equal(out, np_erase(x, top, left, h, w, 0.0))
    assert ((h >= size - size // 2) & (h <= size)).all()
    assert (h == size).any() and (h < size).any()  # whole squares inside, clipped ones at borders
    assert ((out == 0).sum(axis=(1, 2, 3)) == h * w).all()


# ---- batch mixing ----------------------------------------------------------------------------


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_samples_match_numpy_distribution(alpha):
    n = 20_000
    ours = np.array(T.sample_beta(alpha, alpha, (n,), key=mx.random.key(2)))
    theirs = np.random.default_rng(0).beta(alpha, alpha, n)
    assert np.isfinite(ours).all() and (ours >= 0).all() and (ours <= 1).all()
    # Two-sample Kolmogorov-Smirnov test at the 0.1% level.
    assert ks_statistic(ours, theirs) < 1.95 * math.sqrt(2 / n)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[labels]


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_images_and_targets_match_numpy(per_sample):
    x = random_images((6, 4, 4, 3), np.float32)
    y = np.array([0, 1, 2, 3, 4, 1])
    t = T.MixUp(alpha=0.4, num_classes=5, per_sample=per_sample)
    params = t.params(x.shape, KEY)
    images, targets = t.apply(mx.array(x), mx.array(y), params)
    lam = np.array(params.lam).astype(np.float64)
    assert (len(np.unique(lam)) == 1) != per_sample
    rolled = np.roll(np.arange(6), 1)  # sample i is mixed with sample i - 1
    expected_x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[rolled]
    expected_t = lam[:, None] * one_hot(y, 5) + (1 - lam[:, None]) * one_hot(y[rolled], 5)
    np.testing.assert_allclose(np.array(images), expected_x, atol=1e-6)
    np.testing.assert_allclose(np.array(targets), expected_t, atol=1e-6)
    np.testing.assert_allclose(np.array(targets).sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_images_and_targets_match_numpy(per_sample):
    x = random_images((8, 10, 12, 1))
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    t = T.CutMix(alpha=1.0, num_classes=3, per_sample=per_sample)
    params = t.params(x.shape, mx.random.key(4))
    images, targets = t.apply(mx.array(x), mx.array(y), params)
    lam, top, left, h, w = (np.array(p) for p in params)
    rolled = np.roll(np.arange(8), 1)
    expected = x.copy()
    for i in range(8):
        expected[i, top[i] : top[i] + h[i], left[i] : left[i] + w[i]] = x[
            rolled[i], top[i] : top[i] + h[i], left[i] : left[i] + w[i]
        ]
    np.testing.assert_array_equal(np.array(images), expected)
    assert np.array(images).dtype == np.uint8
    np.testing.assert_allclose(lam, 1 - h * w / 120, atol=1e-6)  # label weight = kept area
    expected_t = lam[:, None] * one_hot(y, 3) + (1 - lam[:, None]) * one_hot(y[rolled], 3)
    np.testing.assert_allclose(np.array(targets), expected_t, atol=1e-6)
    assert (len({(a, b, c, d) for a, b, c, d in zip(top, left, h, w, strict=True)}) == 1) != (
        per_sample
    )


def np_cutmix_box(height, width, alpha, rng) -> tuple[int, int, int, int]:
    """torchvision's CutMix box for one batch, NumPy random numbers: (top, left, h, w)."""
    lam = rng.beta(alpha, alpha)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    r = 0.5 * math.sqrt(1.0 - lam)
    half_h, half_w = int(r * height), int(r * width)
    top, left = max(cy - half_h, 0), max(cx - half_w, 0)
    bottom, right = min(cy + half_h, height), min(cx + half_w, width)
    return top, left, bottom - top, right - left


def test_cutmix_boxes_follow_torchvision_distribution():
    n, height, width, alpha = 4000, 24, 32, 0.7
    t = T.CutMix(alpha=alpha, num_classes=2, per_sample=True)
    lam, top, left, h, w = (np.array(p) for p in t.params((n, height, width, 3), KEY))
    assert (top >= 0).all() and (top + h <= height).all()
    assert (left >= 0).all() and (left + w <= width).all()
    rng = np.random.default_rng(0)
    theirs = np.array([np_cutmix_box(height, width, alpha, rng) for _ in range(n)])
    for ours_part, theirs_part in ((h, theirs[:, 2]), (w, theirs[:, 3]), (top, theirs[:, 0])):
        assert ks_statistic(ours_part, theirs_part) < 1.95 * math.sqrt(2 / n)


def test_mixes_chain_on_soft_targets():
    x = random_images((4, 6, 6, 3), np.float32)
    y = mx.array([0, 1, 2, 1])
    images, targets = T.CutMix(1.0, 3)(mx.array(x), y, key=mx.random.key(1))
    images, targets = T.MixUp(1.0, 3)(images, targets, key=mx.random.key(2))
    assert targets.shape == (4, 3)
    np.testing.assert_allclose(np.array(targets).sum(axis=1), 1.0, atol=1e-6)


def test_compiled_compose_matches_eager_and_names_untraceable_transforms():
    steps = [T.RandomCrop(8, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Cutout(3)]
    x = mx.array(random_images((16, 8, 8, 3)))
    eager = T.Compose(steps)(x, key=KEY)
    compiled = T.Compose(steps, compile=True)(x, key=KEY)
    np.testing.assert_allclose(np.array(compiled), np.array(eager), atol=1e-6)

    class ReadsValues(T.Transform):
        def __call__(self, images, key=None):
            return images * images.max().item()

    with pytest.raises(ValueError, match="compile=False"):
        T.Compose([ReadsValues()], compile=True)(x, key=KEY)


def test_compiled_compose_copies_and_pickles():
    import copy
    import pickle

    t = T.Compose([T.RandomHorizontalFlip(), T.ToTensor()], compile=True)
    x = mx.array(random_images((4, 4, 4, 3)))
    first = np.array(t(x, key=KEY))
    for clone in (copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        np.testing.assert_array_equal(np.array(clone(x, key=KEY)), first)
