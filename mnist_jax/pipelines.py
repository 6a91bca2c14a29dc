"""The two data paths: `stream` (tf.data chunks of batches fed to a compiled scan) and `device`
(the splits in device memory, one compiled `lax.scan` per epoch).

Both draw each epoch's order from `data.epoch_order`, so for the same config they train on
the same batches and reach the same parameters (to float tolerance). Both run on a 1-D
device mesh: every batch is split across the devices, parameters and optimizer state are
replicated, and XLA adds the cross-device sums; the global batch stays `batch_size`.

At most one compiled call is in flight at a time: several CPU devices in one process can
deadlock in an all-reduce when many are queued, and each call is long (a chunk or an epoch).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
from jax.sharding import Mesh

from mnist_jax import data, parallel
from mnist_jax.config import Config
from mnist_jax.data import Batch
from mnist_jax.model import Params
from mnist_jax.steps import TrainState, eval_step, make_optimizer, train_step

OnBatch = Callable[[int], None]
ShouldStop = Callable[[], bool]


class EpochRun(NamedTuple):
    """What one `train_epoch` call did: the new state, the batches done if it stopped part-way
    (else None), and the training loss of every step it ran, from step `first_step` (0-based)."""

    state: TrainState
    batches_done: int | None
    losses: np.ndarray
    first_step: int


def _on_host(values: jax.Array) -> np.ndarray:
    """A replicated array's values (in any process, whose copy is local)."""
    return np.asarray(values.addressable_data(0) if values.is_fully_replicated else values)


def _chunk_spec(batches: int, rows: int, sharding) -> Batch:
    shape = (batches, rows)
    return Batch(jax.ShapeDtypeStruct(shape + (28, 28, 1), jnp.uint8, sharding=sharding),
                 jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding),
                 jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=sharding))


def train_chunk(state: TrainState, chunk: Batch, optimizer: optax.GradientTransformation,
                activation: str = "tanh") -> tuple[TrainState, jax.Array]:
    """The train step over each batch of a chunk; batches that are all padding are skipped."""
    def step(state, batch):
        skip = lambda state: (state, jnp.zeros((), state.params[0][0].dtype))  # noqa: E731
        return jax.lax.cond(batch.mask.any(), functools.partial(train_step, batch=batch, optimizer=optimizer,
                                                                     activation=activation),
                            skip, state)

    return jax.lax.scan(step, state, chunk)


def eval_chunk(params: Params, chunk: Batch, activation: str = "tanh") -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over every batch of a chunk."""
    correct, batch_losses = jax.lax.map(functools.partial(eval_step, params, activation=activation), chunk)
    return correct.sum(), batch_losses.sum()


def local_orders(config: Config, share: data.Share, split: str, epochs: range) -> np.ndarray:
    """This process's training order of its share, one row per epoch.

    In one process this is `data.epoch_order` (or the raw files' order), as on the device
    path. Each of several processes shuffles its own share.
    """
    num_examples = len(share.labels)
    if not epochs:
        return np.zeros((0, num_examples), np.int32)
    if not config.shuffle:
        return np.tile(share.local_file_order(split), (len(epochs), 1))
    process = jax.process_index() if jax.process_count() > 1 else None
    order = jax.jit(data.epoch_order, static_argnums=(0, 2, 3))
    return np.stack([np.asarray(order(config.seed, epoch, num_examples, process)) for epoch in epochs])


def _batches_per_pass(bounds: tuple[int, ...], batch_size: int) -> int:
    """The most batches any process needs for its share, so all run the same number of steps."""
    parts = [parallel.process_part(batch_size, q) for q in range(jax.process_count())]
    return max(-(-int(n) // part) for n, part in zip(np.diff(bounds), parts))


def stream_eval(eval_fn: Callable, params: Params, stream: tf.data.Dataset,
                sharding=None) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over a tf.data stream of chunks."""
    correct, total_loss = 0, 0.0
    for chunk in data.prefetch_to_device(stream, sharding):
        chunk_correct, chunk_loss = jax.block_until_ready(eval_fn(params, chunk))
        correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
    return correct, total_loss


class StreamPipeline:
    """tf.data chunks of batches, put on the devices two ahead of use, each trained on by one
    compiled scan of the train step. One tf.data stream covers every epoch, so it is built
    (and its functions traced) once, and its prefetching runs on across epoch boundaries.
    """

    def __init__(self, config: Config, shares: dict[str, data.Share], state: TrainState, mesh: Mesh,
                 start_epoch: int = 1, batches_done: int = 0):
        self.config = config
        self.chunk_sharding = parallel.split_along(mesh, axis=1)
        rows = parallel.rows_per_batch(config.batch_size, mesh)
        eval_rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
        train = shares["train"]
        self.steps_per_epoch = _batches_per_pass(train.bounds, config.batch_size)
        self.chunks_per_epoch = -(-self.steps_per_epoch // config.batches_per_chunk)
        self.next_epoch = start_epoch
        self.chunks_done = batches_done // config.batches_per_chunk  # of the epoch under way
        # Each process streams its rows of every batch, from its own share.
        local_rows, local_eval_rows = rows // jax.process_count(), eval_rows // jax.process_count()
        stream = data.batch_chunks(
            train.images, train.labels, local_orders(config, train, "train", range(start_epoch, config.num_epochs + 1)),
            parallel.process_part(config.batch_size), config.batches_per_chunk, local_rows, self.steps_per_epoch)
        self.train_stream = data.prefetch_to_device(stream.skip(self.chunks_done), self.chunk_sharding)
        self.eval_streams = {
            name: data.batch_chunks(share.images, share.labels, np.arange(len(share.labels))[None],
                                    parallel.process_part(config.eval_batch_size), 1, local_eval_rows,
                                    _batches_per_pass(share.bounds, config.eval_batch_size))
            for name, share in shares.items()}
        start = time.perf_counter()
        # Every chunk has the same shape, so these two programs are all that is compiled.
        step = jax.jit(functools.partial(train_chunk, optimizer=make_optimizer(config), activation=config.activation),
                       donate_argnums=0)
        self.step = step.lower(state, _chunk_spec(config.batches_per_chunk, rows, self.chunk_sharding)).compile()
        self.eval_step = jax.jit(functools.partial(eval_chunk, activation=config.activation)).lower(
            state.params, _chunk_spec(1, eval_rows, self.chunk_sharding)).compile()
        self.compile_seconds = time.perf_counter() - start

    def train_epoch(self, state: TrainState, epoch: int, on_batch: OnBatch,
                    should_stop: ShouldStop = lambda: False) -> EpochRun:
        """Trains on the rest of the epoch, or until `should_stop` says so after a chunk."""
        if epoch != self.next_epoch:
            raise ValueError(f"the stream is at epoch {self.next_epoch}, not {epoch}")
        first_step, losses = self.chunks_done * self.config.batches_per_chunk, []
        while self.chunks_done < self.chunks_per_epoch:
            state, chunk_losses = jax.block_until_ready(self.step(state, next(self.train_stream)))
            losses.append(chunk_losses)  # stays on the device until the epoch ends
            self.chunks_done += 1
            batches_done = min(self.chunks_done * self.config.batches_per_chunk, self.steps_per_epoch)
            on_batch(batches_done)
            if should_stop() and self.chunks_done < self.chunks_per_epoch:
                return EpochRun(state, batches_done, np.concatenate([_on_host(x) for x in losses]), first_step)
        self.next_epoch, self.chunks_done = epoch + 1, 0
        steps = np.concatenate([_on_host(x) for x in losses])[:self.steps_per_epoch - first_step]
        return EpochRun(state, None, steps, first_step)

    def evaluate(self, params: Params, split: str) -> tuple[jax.Array, jax.Array]:
        """Correct predictions and summed loss over a split, on the devices."""
        return stream_eval(self.eval_step, params, self.eval_streams[split], self.chunk_sharding)


def _gather(images: jax.Array, labels: jax.Array, indices: jax.Array, mesh: Mesh) -> Batch:
    """The batch at `indices` (-1 for padding), split across the devices."""
    rows = jnp.maximum(indices, 0)
    batch = Batch(images[rows], labels[rows], indices >= 0)
    return jax.lax.with_sharding_constraint(batch, parallel.split_along(mesh))


def scan_epoch(state: TrainState, images: jax.Array, labels: jax.Array, row_order: jax.Array,
               epoch: jax.Array, seed: jax.Array, *, config: Config, rows: int,
               mesh: Mesh) -> tuple[TrainState, jax.Array]:
    """One epoch as a single program: shuffle on the device, then scan the step over batches.

    `row_order` lists the split's rows in its base order: tfds's, or the raw files' when
    not shuffling. `seed` is an argument (not the config's) so that seed sweeps can vmap it.
    """
    if config.shuffle:
        row_order = row_order[data.epoch_order(seed, epoch, row_order.shape[0])]
    indices = data.pad_to_batches(row_order[None], config.batch_size, rows, xp=jnp)[0, :, 0]
    optimizer = make_optimizer(config)
    return jax.lax.scan(
        lambda state, i: train_step(state, _gather(images, labels, i, mesh), optimizer, config.activation),
        state, indices)


def scan_eval(params: Params, images: jax.Array, labels: jax.Array, row_order: jax.Array, *,
              batch_size: int, rows: int, mesh: Mesh, activation: str = "tanh") -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over a whole split, as a single program."""
    indices = data.pad_to_batches(row_order[None], batch_size, rows, xp=jnp)[0, :, 0]

    def accumulate(totals, batch_indices):
        correct, batch_loss = eval_step(params, _gather(images, labels, batch_indices, mesh), activation)
        return (totals[0] + correct, totals[1] + batch_loss), None

    zero = jnp.zeros((), params[0][0].dtype)
    (correct, total_loss), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.int32), zero), indices)
    return correct, total_loss


def place_splits(config: Config, shares: dict[str, data.Share], mesh: Mesh) -> dict[str, tuple]:
    """Each split in device memory as (images, labels, row order), split across the mesh."""
    splits = {}
    for name, share in shares.items():
        images, labels, rows_of = parallel.place_split(share.images, share.labels, share.bounds, mesh)
        in_file_order = name == "train" and not config.shuffle
        order = rows_of[data.file_order(name, share.total)] if in_file_order else rows_of
        splits[name] = (images, labels, parallel.replicate(order, mesh))
    return splits


class DevicePipeline:
    """Each split read once into device memory, split across the devices (each process
    contributing its share); an epoch and an evaluation are one call each."""

    def __init__(self, config: Config, shares: dict[str, data.Share], state: TrainState, mesh: Mesh,
                 start_epoch: int = 1, batches_done: int = 0):
        del start_epoch, batches_done  # every epoch is one call and depends only on its number
        self.config = config
        self.splits = place_splits(config, shares, mesh)
        rows = parallel.rows_per_batch(config.batch_size, mesh)
        eval_rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
        start = time.perf_counter()
        epoch = jax.jit(functools.partial(scan_epoch, config=config, rows=rows, mesh=mesh), donate_argnums=0)
        self.seed = jnp.uint32(config.seed)
        self.epoch = epoch.lower(state, *self.splits["train"], jnp.int32(0), self.seed).compile()
        evaluate = jax.jit(functools.partial(scan_eval, batch_size=config.eval_batch_size, rows=eval_rows, mesh=mesh,
                                             activation=config.activation))
        self.evals = {name: evaluate.lower(state.params, *split).compile() for name, split in self.splits.items()}
        self.compile_seconds = time.perf_counter() - start

    def train_epoch(self, state: TrainState, epoch: int, on_batch: OnBatch,
                    should_stop: ShouldStop = lambda: False) -> EpochRun:
        """Trains on the whole epoch (one call: it cannot stop part-way)."""
        state, batch_losses = jax.block_until_ready(
            self.epoch(state, *self.splits["train"], jnp.int32(epoch), self.seed))
        on_batch(batch_losses.shape[0])
        return EpochRun(state, None, _on_host(batch_losses), 0)

    def evaluate(self, params: Params, split: str) -> tuple[jax.Array, jax.Array]:
        """Correct predictions and summed loss over a split, on the devices."""
        return jax.block_until_ready(self.evals[split](params, *self.splits[split]))


PIPELINES = {"stream": StreamPipeline, "device": DevicePipeline}
