"""The `stream` path's input pipeline: tf.data chunks of batches, prefetched onto the devices."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator

# TF only gathers uint8 batches here: its info logs and oneDNN kernels are noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax
import numpy as np
import tensorflow as tf

from mnist_jax.data.batches import pad_to_batches
from mnist_jax.steps import Batch

# TF only feeds data: keep it off every accelerator so JAX owns their memory.
tf.config.set_visible_devices([], "GPU")


def batch_chunks(
    images: np.ndarray,
    labels: np.ndarray,
    orders: np.ndarray,
    batch_size: int,
    batches_per_chunk: int = 1,
    rows_per_batch: int | None = None,
    num_batches: int | None = None,
) -> tf.data.Dataset:
    """A tf.data stream of fixed-shape chunks of `batches_per_chunk` batches, pass after pass.

    See `pad_to_batches` for the layout; padding rows have mask False, so every example
    counts exactly once per pass and every chunk has the same shape. Build it once and
    iterate it as often as needed: tf.data traces its functions only when it is built.
    """
    indices = pad_to_batches(
        orders.astype(np.int32),
        batch_size,
        rows_per_batch or batch_size,
        batches_per_chunk,
        num_batches=num_batches,
    )
    images, labels = tf.constant(images), tf.constant(labels)

    def gather(chunk_indices):
        mask = chunk_indices >= 0
        rows = tf.maximum(chunk_indices, 0)
        return Batch(tf.gather(images, rows), tf.gather(labels, rows), mask)

    return (
        tf.data.Dataset.from_tensor_slices(indices.reshape(-1, *indices.shape[2:]))
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )


def prefetch_to_device(
    dataset: Iterable, sharding: jax.sharding.Sharding | None = None, size: int = 2
) -> Iterator[Batch]:
    """Transfers a tf.data stream's batches to the devices `size` ahead of their use."""

    def put(batch):
        # Each process contributes its rows of the global batch (all of them in one process).
        if sharding is None:
            return jax.device_put(batch)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)

    queue = collections.deque()
    # A named iterator lives as long as this generator: tearing down a tf.data
    # iterator can stall for a while, which must not happen inside an epoch.
    iterator = (
        dataset.as_numpy_iterator() if isinstance(dataset, tf.data.Dataset) else iter(dataset)
    )
    for batch in iterator:
        queue.append(put(Batch(*batch)))
        if len(queue) > size:
            yield queue.popleft()
    yield from queue
