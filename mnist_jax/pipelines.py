"""The two data paths: `stream` (tf.data chunks of batches fed to a compiled scan) and `device`
(the splits in device memory, one compiled `lax.scan` per epoch).

Both draw each epoch's order from `data.epoch_order`, so for the same config they
train on the same batches and reach the same parameters (to float tolerance).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

from mnist_jax import data
from mnist_jax.config import Config
from mnist_jax.data import Batch
from mnist_jax.model import Params
from mnist_jax.steps import TrainState, eval_step, make_optimizer, train_step

Split = tuple[np.ndarray, np.ndarray]
OnBatch = Callable[[int], None]


def _chunk_spec(batches: int, batch_size: int) -> Batch:
    shape = (batches, batch_size)
    return Batch(jax.ShapeDtypeStruct(shape + (28, 28, 1), jnp.uint8),
                 jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, jnp.bool_))


def train_chunk(state: TrainState, chunk: Batch,
                optimizer: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
    """The train step over each batch of a chunk; batches that are all padding are skipped."""
    def step(state, batch):
        skip = lambda state: (state, jnp.zeros((), state.params[0][0].dtype))  # noqa: E731
        return jax.lax.cond(batch.mask.any(), functools.partial(train_step, batch=batch, optimizer=optimizer),
                            skip, state)

    return jax.lax.scan(step, state, chunk)


def eval_chunk(params: Params, chunk: Batch) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over every batch of a chunk."""
    correct, batch_losses = jax.lax.map(functools.partial(eval_step, params), chunk)
    return correct.sum(), batch_losses.sum()


def epoch_orders(config: Config, num_examples: int, epochs: range) -> np.ndarray:
    """Each epoch's example order, one row per epoch."""
    if not config.shuffle:
        return np.tile(np.arange(num_examples, dtype=np.int32), (len(epochs), 1))
    order = jax.jit(data.epoch_order, static_argnums=(0, 2))
    return np.stack([np.asarray(order(config.seed, epoch, num_examples)) for epoch in epochs])


def stream_eval(eval_fn: Callable, params: Params, stream: tf.data.Dataset) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over a tf.data stream of chunks."""
    correct, total_loss = 0, 0.0
    for chunk in data.prefetch_to_device(stream):
        chunk_correct, chunk_loss = eval_fn(params, chunk)
        correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
    return correct, total_loss


class StreamPipeline:
    """tf.data chunks of batches, put on the device two ahead of use, each trained on by one
    compiled scan of the train step. One tf.data stream covers every epoch, so it is built
    (and its functions traced) once, and its prefetching runs on across epoch boundaries.
    """

    def __init__(self, config: Config, splits: dict[str, Split], state: TrainState):
        self.config = config
        images, labels = splits["train"]
        rows = config.batch_size * config.batches_per_chunk
        self.chunks_per_epoch = -(-len(labels) // rows)
        self.steps_per_epoch = -(-len(labels) // config.batch_size)
        self.next_epoch = 1
        self.train_stream = data.prefetch_to_device(data.batch_chunks(
            images, labels, epoch_orders(config, len(labels), range(1, config.num_epochs + 1)),
            config.batch_size, config.batches_per_chunk))
        self.eval_streams = {name: data.batch_chunks(x, y, np.arange(len(y))[None], config.eval_batch_size)
                             for name, (x, y) in splits.items()}
        start = time.perf_counter()
        # Every chunk has the same shape, so these two programs are all that is compiled.
        step = jax.jit(functools.partial(train_chunk, optimizer=make_optimizer(config)), donate_argnums=0)
        self.step = step.lower(state, _chunk_spec(config.batches_per_chunk, config.batch_size)).compile()
        self.eval_step = jax.jit(eval_chunk).lower(state.params, _chunk_spec(1, config.eval_batch_size)).compile()
        self.compile_seconds = time.perf_counter() - start

    def train_epoch(self, state: TrainState, epoch: int, on_batch: OnBatch) -> TrainState:
        if epoch != self.next_epoch:
            raise ValueError(f"the stream is at epoch {self.next_epoch}, not {epoch}")
        self.next_epoch += 1
        previous_losses = None
        for index, chunk in enumerate(itertools.islice(self.train_stream, self.chunks_per_epoch)):
            state, losses = self.step(state, chunk)
            # Wait on the call before last: the device always has the next call
            # queued, while the host never runs far ahead and progress is real.
            if previous_losses is not None:
                previous_losses.block_until_ready()
            previous_losses = losses
            on_batch(min((index + 1) * self.config.batches_per_chunk, self.steps_per_epoch))
        return jax.block_until_ready(state)

    def evaluate(self, params: Params, split: str) -> tuple[jax.Array, jax.Array]:
        """Correct predictions and summed loss over a split, on the device."""
        return stream_eval(self.eval_step, params, self.eval_streams[split])


def scan_epoch(state: TrainState, images: jax.Array, labels: jax.Array, epoch: jax.Array, *,
               config: Config) -> tuple[TrainState, jax.Array]:
    """One epoch as a single program: shuffle on the device, then scan the step over batches."""
    num_examples = labels.shape[0]
    order = data.epoch_order(config.seed, epoch, num_examples) if config.shuffle else jnp.arange(num_examples)
    indices, mask = data.padded_batch_indices(order, config.batch_size)
    optimizer = make_optimizer(config)

    def step(state, batch_indices):
        rows, row_mask = batch_indices
        return train_step(state, Batch(images[rows], labels[rows], row_mask), optimizer)

    return jax.lax.scan(step, state, (indices, mask))


def scan_eval(params: Params, images: jax.Array, labels: jax.Array, *,
              batch_size: int) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over a whole split, as a single program."""
    indices, mask = data.padded_batch_indices(jnp.arange(labels.shape[0]), batch_size)

    def accumulate(totals, batch_indices):
        rows, row_mask = batch_indices
        correct, batch_loss = eval_step(params, Batch(images[rows], labels[rows], row_mask))
        return (totals[0] + correct, totals[1] + batch_loss), None

    zero = jnp.zeros((), params[0][0].dtype)
    (correct, total_loss), _ = jax.lax.scan(accumulate, (jnp.zeros((), jnp.int32), zero), (indices, mask))
    return correct, total_loss


class DevicePipeline:
    """Each split read once into device memory; an epoch and an evaluation are one call each."""

    def __init__(self, config: Config, splits: dict[str, Split], state: TrainState):
        self.config = config
        self.splits = {name: jax.device_put(split) for name, split in splits.items()}
        start = time.perf_counter()
        epoch = jax.jit(functools.partial(scan_epoch, config=config), donate_argnums=0)
        self.epoch = epoch.lower(state, *self.splits["train"], jnp.int32(0)).compile()
        evaluate = jax.jit(functools.partial(scan_eval, batch_size=config.eval_batch_size))
        self.evals = {name: evaluate.lower(state.params, *split).compile()
                      for name, split in self.splits.items()}
        self.compile_seconds = time.perf_counter() - start

    def train_epoch(self, state: TrainState, epoch: int, on_batch: OnBatch) -> TrainState:
        state, batch_losses = self.epoch(state, *self.splits["train"], jnp.int32(epoch))
        state = jax.block_until_ready(state)
        on_batch(batch_losses.shape[0])
        return state

    def evaluate(self, params: Params, split: str) -> tuple[jax.Array, jax.Array]:
        """Correct predictions and summed loss over a split, on the device."""
        return self.evals[split](params, *self.splits[split])


PIPELINES = {"stream": StreamPipeline, "device": DevicePipeline}
