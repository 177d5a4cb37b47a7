"""DataLoader: order, coverage, lengths, sharding, determinism and keys of the transforms."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlxvision  # noqa: F401  (loads the BLAS that mlx.core needs first)
from mlxvision.data import ArrayDataset, DataLoader
from mlxvision.data import transforms as T
from mlxvision.data.loader import batch_key


def numbered(n: int, transform=None) -> ArrayDataset:
    """A dataset whose sample i is a 2×2 image filled with i and labelled i."""
    images = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None, None, None], (n, 2, 2, 1))
    return ArrayDataset(
        images, np.arange(n), classes=[str(i) for i in range(n)], transform=transform
    )


def seen(loader: DataLoader) -> list[np.ndarray]:
    """The sample ids of each batch of one epoch, checking images and labels agree."""
    batches = []
    for images, labels in loader:
        ids = np.array(labels)
        np.testing.assert_array_equal(np.array(images)[:, 0, 0, 0], ids)
        batches.append(ids)
    return batches


def distributed_sampler_reference(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """PyTorch DistributedSampler (drop_last=False): pad from the start, then every world-th."""
    total = math.ceil(len(order) / world) * world
    padded = list(order)
    while len(padded) < total:
        padded += list(order[: total - len(padded)])
    return np.array(padded[rank:total:world])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("prefetch", [False, True])
def test_every_sample_exactly_once_per_epoch(shuffle, prefetch):
    loader = DataLoader(numbered(103), batch_size=10, shuffle=shuffle, prefetch=prefetch, seed=3)
    for _ in range(2):
        batches = seen(loader)
        assert [len(b) for b in batches] == [10] * 10 + [3]
        ids = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(ids), np.arange(103))
        if not shuffle:
            np.testing.assert_array_equal(ids, np.arange(103))


def test_drop_last_drops_only_the_incomplete_batch():
    loader = DataLoader(numbered(103), batch_size=10, shuffle=True, drop_last=True)
    batches = seen(loader)
    assert len(batches) == len(loader) == 10
    assert all(len(b) == 10 for b in batches)
    ids = np.concatenate(batches)
    assert len(np.unique(ids)) == 100
    np.testing.assert_array_equal(ids, loader.indices(0)[:100])


@pytest.mark.parametrize("n", [1, 9, 10, 11, 37])
@pytest.mark.parametrize("batch_size", [1, 4, 10])
@pytest.mark.parametrize("world_size", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_matches_batches_yielded(n, batch_size, world_size, drop_last):
    per_rank = math.ceil(n / world_size)
    if drop_last and per_rank < batch_size:
        with pytest.raises(ValueError, match="drop_last"):
            DataLoader(numbered(n), batch_size, drop_last=drop_last, world_size=world_size)
        return
    lengths = set()
    for rank in range(world_size):
        loader = DataLoader(
            numbered(n), batch_size, drop_last=drop_last, rank=rank, world_size=world_size
        )
        batches = seen(loader)
        assert len(batches) == len(loader)
        assert sum(len(b) for b in batches) == (
            per_rank // batch_size * batch_size if drop_last else per_rank
        )
        lengths.add(len(loader))
    assert len(lengths) == 1  # every rank runs the same number of steps


def test_same_seed_same_order_other_epoch_other_order():
    a = DataLoader(numbered(50), batch_size=8, shuffle=True, seed=5)
    b = DataLoader(numbered(50), batch_size=8, shuffle=True, seed=5)
    epoch0 = np.concatenate(seen(a))
    np.testing.assert_array_equal(epoch0, np.concatenate(seen(b)))
    epoch1 = np.concatenate(seen(a))
    assert not np.array_equal(epoch0, epoch1)
    b.set_epoch(0)
    np.testing.assert_array_equal(epoch0, np.concatenate(seen(b)))
    other_seed = DataLoader(numbered(50), batch_size=8, shuffle=True, seed=6)
    assert not np.array_equal(epoch0, np.concatenate(seen(other_seed)))


@pytest.mark.parametrize("n", [12, 13, 14])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_and_complete(n, shuffle):
    world = 4
    shards = []
    for rank in range(world):
        loader = DataLoader(
            numbered(n), batch_size=2, shuffle=shuffle, seed=9, rank=rank, world_size=world
        )
        loader.set_epoch(2)
        ids = np.concatenate(seen(loader))
        order = DataLoader(numbered(n), batch_size=2, shuffle=shuffle, seed=9).order(2)
        np.testing.assert_array_equal(ids, distributed_sampler_reference(order, rank, world))
        shards.append(ids)
    everything = np.concatenate(shards)
    assert len(everything) == math.ceil(n / world) * world
    np.testing.assert_array_equal(np.unique(everything), np.arange(n))
    counts = np.bincount(everything, minlength=n)
    if n % world == 0:
        assert (counts == 1).all()
    else:
        # The padding repeats the first samples of the epoch's order, once each.
        order = DataLoader(numbered(n), batch_size=2, shuffle=shuffle, seed=9).order(2)
        repeated = order[: world - n % world]
        assert set(np.flatnonzero(counts == 2)) == set(repeated.tolist())
        assert counts.sum() - n == len(repeated)


def test_more_ranks_than_samples_repeat_the_order():
    shards = [
        np.concatenate(seen(DataLoader(numbered(3), 1, rank=r, world_size=7))) for r in range(7)
    ]
    np.testing.assert_array_equal(np.concatenate(shards), [0, 1, 2, 0, 1, 2, 0])


def test_transform_gets_the_batch_key():
    transform = T.Compose([T.RandomCrop(2, padding=1), T.RandomHorizontalFlip()])
    ds = numbered(20, transform=transform)
    loader = DataLoader(ds, batch_size=6, shuffle=True, seed=4)
    loader.set_epoch(3)
    order = loader.indices(3)
    for b, (images, _) in enumerate(loader):
        idx = order[b * 6 : (b + 1) * 6]
        expected = transform(mx.array(ds.images[idx]), key=batch_key(4, 3, b))
        np.testing.assert_array_equal(np.array(images), np.array(expected))


def test_batch_transform_gets_its_own_key_and_returns_soft_targets():
    ds = numbered(16, transform=T.ToTensor())
    mix = T.MixUp(alpha=1.0, num_classes=16)
    loader = DataLoader(ds, batch_size=8, seed=1, batch_transform=mix)
    batches = list(loader)
    for b, (images, targets) in enumerate(batches):
        idx = np.arange(b * 8, (b + 1) * 8)
        x = T.ToTensor()(mx.array(ds.images[idx]), key=batch_key(1, 0, b))
        ex_images, ex_targets = mix(x, mx.array(idx.astype(np.int32)), key=batch_key(1, 0, b, 1))
        np.testing.assert_allclose(np.array(images), np.array(ex_images))
        np.testing.assert_allclose(np.array(targets), np.array(ex_targets))
        assert targets.shape == (8, 16)
    assert not bool(mx.array_equal(batch_key(1, 0, 0), batch_key(1, 0, 0, stream=1)))


def test_prefetch_does_not_change_batches():
    transform = T.Compose([T.RandomCrop(2, padding=1), T.ToTensor()])
    on = DataLoader(numbered(30, transform), batch_size=7, shuffle=True, prefetch=True)
    off = DataLoader(numbered(30, transform), batch_size=7, shuffle=True, prefetch=False)
    for (xa, ya), (xb, yb) in zip(on, off, strict=True):
        np.testing.assert_array_equal(np.array(xa), np.array(xb))
        np.testing.assert_array_equal(np.array(ya), np.array(yb))


def test_bad_arguments_are_named():
    ds = numbered(10)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        DataLoader(ds, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        DataLoader(ds, world_size=0)
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(ds, batch_size=4, drop_last=True, world_size=4)
    with pytest.raises(TypeError, match="dataset"):
        DataLoader([1, 2, 3])


def test_compiled_transform_in_loader_matches_eager_including_last_batch():
    steps = [T.RandomCrop(2, padding=1), T.RandomHorizontalFlip(), T.ToTensor()]
    eager = DataLoader(numbered(23, T.Compose(steps)), batch_size=5, shuffle=True)
    fast = DataLoader(numbered(23, T.Compose(steps, compile=True)), batch_size=5, shuffle=True)
    sizes = []
    for (xa, ya), (xb, yb) in zip(eager, fast, strict=True):
        np.testing.assert_allclose(np.array(xa), np.array(xb), atol=1e-6)
        np.testing.assert_array_equal(np.array(ya), np.array(yb))
        sizes.append(xa.shape[0])
    assert sizes == [5, 5, 5, 5, 3]
