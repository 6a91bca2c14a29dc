"""The minibatch stream: fixed shapes, every example once, seeded shuffles."""

import jax
import numpy as np
import pytest

from mnist_jax import data

N, B = 103, 16


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 28, 28, 1)).astype(np.uint8)
    return images, np.arange(N, dtype=np.int32)  # label = example index


def epoch_order(split, seed):
    batches = list(data.batches(*split, B, shuffle_seed=seed))
    assert all(b.images.shape == (B, 28, 28, 1) and b.labels.shape == (B,) for b in batches)
    labels = np.concatenate([b.labels[b.mask] for b in batches])
    for b in batches:  # images travel with their labels
        np.testing.assert_array_equal(b.images[b.mask], split[0][b.labels[b.mask]])
    return batches, labels


def test_every_example_once_with_a_padded_masked_last_batch(split):
    batches, labels = epoch_order(split, None)
    assert len(batches) == -(-N // B)
    np.testing.assert_array_equal(labels, np.arange(N))  # no shuffle: file order
    assert batches[-1].mask.sum() == N % B and batches[-1].mask[: N % B].all()
    assert all(b.mask.all() for b in batches[:-1])


def test_shuffle_is_seeded_and_differs_by_epoch(split):
    _, epoch1 = epoch_order(split, (42, 1))
    _, epoch1_again = epoch_order(split, (42, 1))
    _, epoch2 = epoch_order(split, (42, 2))
    _, other_seed = epoch_order(split, (7, 1))
    for order in (epoch1, epoch2, other_seed):
        np.testing.assert_array_equal(np.sort(order), np.arange(N))
    np.testing.assert_array_equal(epoch1, epoch1_again)
    assert not np.array_equal(epoch1, np.arange(N))
    assert not np.array_equal(epoch1, epoch2)
    assert not np.array_equal(epoch1, other_seed)


def test_prefetch_to_device_keeps_order_and_puts_on_device(split):
    host = list(data.batches(*split, B))
    device = list(data.prefetch_to_device(iter(host), size=2))
    assert len(device) == len(host)
    for h, d in zip(host, device):
        assert isinstance(d.images, jax.Array)
        np.testing.assert_array_equal(d.labels, h.labels)
