"""Epoch orders and the batch layout both data paths share: pure functions of the seed and the
epoch."""

from __future__ import annotations

import jax
import numpy as np


def epoch_order(
    seed: int, epoch: jax.Array | int, num_examples: int, process: int | None = None
) -> jax.Array:
    """The training order of epoch `epoch`: a permutation drawn from (seed, epoch).

    Both pipelines use it, so they see the same batches. `process` gives each process
    of a multi-process stream its own order of its own share.
    """
    key = jax.random.fold_in(jax.random.key(seed), epoch)
    return jax.random.permutation(
        key if process is None else jax.random.fold_in(key, process), num_examples
    )


def pad_to_batches(
    orders,
    batch_size: int,
    rows_per_batch: int,
    batches_per_chunk: int = 1,
    xp=np,
    num_batches: int | None = None,
):
    """Example indices laid out as whole batches: (passes, chunks, batches_per_chunk,
    rows_per_batch).

    `orders` holds one row of indices per pass over a split. Each batch takes the next
    `batch_size` of them and is widened to `rows_per_batch` rows (a multiple of the
    device count); each pass ends with padding to `num_batches` batches (default: as many
    as the pass needs) and to a whole number of chunks. Padding is -1,
    so `indices >= 0` is the mask. `xp` is numpy, or jax.numpy inside a jitted function.
    """
    num_passes, num_examples = orders.shape
    num_batches = num_batches or -(-num_examples // batch_size)
    num_chunks = -(-num_batches // batches_per_chunk)
    batches = xp.pad(
        orders, ((0, 0), (0, num_batches * batch_size - num_examples)), constant_values=-1
    )
    batches = xp.pad(
        batches.reshape(num_passes, num_batches, batch_size),
        (
            (0, 0),
            (0, num_chunks * batches_per_chunk - num_batches),
            (0, rows_per_batch - batch_size),
        ),
        constant_values=-1,
    )
    return batches.reshape(num_passes, num_chunks, batches_per_chunk, rows_per_batch)
