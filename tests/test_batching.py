"""Epoch orders, the batch layout and the tf.data stream: fixed shapes, every example once per
pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.data import streams
from mnist_jax.steps import Batch

N, B, K = 103, 16, 3


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 28, 28, 1)).astype(np.uint8)
    return images, np.arange(N, dtype=np.int32)  # label = example index


def passes(split, orders, batches_per_chunk=K):
    """The labels seen in each pass, in order, checking shapes and image-label pairing."""
    chunks = list(streams.batch_chunks(*split, orders, B, batches_per_chunk).as_numpy_iterator())
    per_pass = len(chunks) // len(orders)
    assert per_pass == -(-N // (B * batches_per_chunk))
    seen = []
    for chunk in chunks:
        chunk = Batch(*chunk)
        assert chunk.images.shape == (batches_per_chunk, B, 28, 28, 1)
        assert chunk.labels.shape == chunk.mask.shape == (batches_per_chunk, B)
        np.testing.assert_array_equal(chunk.images[chunk.mask], split[0][chunk.labels[chunk.mask]])
        seen.append(chunk.labels[chunk.mask])
    return [np.concatenate(seen[i * per_pass : (i + 1) * per_pass]) for i in range(len(orders))]


def test_every_example_once_per_pass_in_the_given_order(split):
    orders = np.stack([np.arange(N), np.arange(N)[::-1]])
    file_order, reversed_order = passes(split, orders)
    np.testing.assert_array_equal(file_order, np.arange(N))
    np.testing.assert_array_equal(reversed_order, np.arange(N)[::-1])


def test_padding_sits_at_the_end_of_each_pass(split):
    chunks = [
        Batch(*c)
        for c in streams.batch_chunks(*split, np.arange(N)[None], B, 1).as_numpy_iterator()
    ]
    assert len(chunks) == -(-N // B)
    assert all(c.mask.all() for c in chunks[:-1])
    assert chunks[-1].mask.sum() == N % B and chunks[-1].mask[0, : N % B].all()


def test_epoch_order_is_seeded_and_differs_by_epoch():
    order = lambda seed, epoch: np.asarray(data.epoch_order(seed, epoch, N))  # noqa: E731
    for o in (order(42, 1), order(42, 2), order(7, 1)):
        np.testing.assert_array_equal(np.sort(o), np.arange(N))
    np.testing.assert_array_equal(order(42, 1), order(42, 1))
    assert not np.array_equal(order(42, 1), np.arange(N))
    assert not np.array_equal(order(42, 1), order(42, 2))
    assert not np.array_equal(order(42, 1), order(7, 1))


def test_pad_to_batches_layout_is_the_same_in_numpy_and_jax():
    orders = np.stack([np.arange(N), np.arange(N)[::-1]])
    host = data.pad_to_batches(orders, B, B + 2, K)
    device = np.asarray(data.pad_to_batches(jnp.asarray(orders), B, B + 2, K, xp=jnp))
    np.testing.assert_array_equal(host, device)
    num_batches = -(-N // B)
    assert host.shape == (2, -(-num_batches // K), K, B + 2)
    batches = host.reshape(2, -1, B + 2)
    assert (batches[:, :, B:] == -1).all()  # widened rows are padding
    assert (batches[:, num_batches:] == -1).all()  # so are whole batches past the pass's end
    for order, pass_batches in zip(orders, batches, strict=True):
        np.testing.assert_array_equal(pass_batches[pass_batches >= 0], order)


def test_widened_batches_keep_every_example_once(split):
    chunks = [
        Batch(*c)
        for c in streams.batch_chunks(*split, np.arange(N)[None], B, 1, B + 3).as_numpy_iterator()
    ]
    assert all(c.labels.shape == (1, B + 3) for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.labels[c.mask] for c in chunks]), np.arange(N))


def test_prefetch_to_device_keeps_order_and_puts_on_device(split):
    stream = streams.batch_chunks(*split, np.arange(N)[None], B, 1)
    host = [Batch(*c) for c in stream.as_numpy_iterator()]
    device = list(streams.prefetch_to_device(stream, size=2))
    assert len(device) == len(host)
    for h, d in zip(host, device, strict=True):
        assert isinstance(d.images, jax.Array)
        np.testing.assert_array_equal(d.labels, h.labels)
