"""The `stream` path: tf.data chunks of batches put on the devices ahead of use; one compiled
program trains any span of a chunk, each call sized by `pacing`, and evaluation takes one batch
a call."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_jax import data
from mnist_jax.config import Config
from mnist_jax.models import Variables
from mnist_jax.pipelines.interface import EpochRun, OnBatch, ShouldStop, Totals, never_stop
from mnist_jax.pipelines.loops import Span, compile_timed, evaluate_over, on_host, train_over
from mnist_jax.pipelines.pacing import Pacer
from mnist_jax.runtime import parallel
from mnist_jax.steps import Batch, Steps, TrainState, epoch_key


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
    return np.stack(
        [np.asarray(order(config.seed, epoch, num_examples, process)) for epoch in epochs]
    )


def _batches_per_pass(bounds: tuple[int, ...], batch_size: int) -> int:
    """The most batches any process needs for its share, so all run the same number of steps."""
    parts = [parallel.process_part(batch_size, q) for q in range(jax.process_count())]
    return max(-(-int(n) // part) for n, part in zip(np.diff(bounds), parts, strict=True))


def _chunk_spec(batches: int, rows: int, sharding) -> Batch:
    shape = (batches, rows)
    return Batch(
        jax.ShapeDtypeStruct(shape + (28, 28, 1), jnp.uint8, sharding=sharding),
        jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding),
        jax.ShapeDtypeStruct(shape, jnp.bool_, sharding=sharding),
    )


def real_row_counts(bounds: tuple[int, ...], batch_size: int) -> tuple[int, ...]:
    """Every number of real rows a training batch of the stream holds: each process fills its
    part of every batch from its share (`bounds`) until the share runs out."""
    parts = [parallel.process_part(batch_size, q) for q in range(len(bounds) - 1)]
    counts = {
        sum(
            int(np.clip(n - step * part, 0, part))
            for n, part in zip(np.diff(bounds), parts, strict=True)
        )
        for step in range(_batches_per_pass(bounds, batch_size))
    }
    return tuple(sorted(counts - {0}))


def _train_chunk(
    train_step: Callable,
    real_rows: tuple[int, ...] | None,
    state: TrainState,
    chunk: Batch,
    seed: jax.Array,
    epoch: jax.Array,
    first_step: jax.Array,
    span: Span,
) -> tuple[TrainState, jax.Array]:
    """The train step over the `span` of a chunk's batches, the chunk's first being step
    `first_step` of the epoch."""
    return train_over(
        train_step,
        state,
        chunk,
        epoch_key(seed, epoch),
        first_step,
        real_rows=real_rows,
        span=span,
    )


class StreamPipeline:
    """tf.data chunks of batches, put on the devices two ahead of use, each trained on by one
    compiled call of the train step where the chunk is quick, and several sized by `pacing`
    where it is not. One tf.data stream covers every epoch from the start position on, so it is
    built (and its functions traced) once, and its prefetching runs on across epoch boundaries.
    """

    def __init__(
        self,
        config: Config,
        steps: Steps,
        shares: dict[str, data.Share],
        state: TrainState,
        mesh: Mesh,
        start_epoch: int = 1,
        batches_done: int = 0,
    ):
        from mnist_jax.data import streams  # TensorFlow, for this path only

        self.config = config
        self.chunk_sharding = parallel.batch_sharding(mesh, axis=1)
        rows = parallel.rows_per_batch(config.batch_size, mesh)
        eval_rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
        train = shares["train"]
        self.steps_per_epoch = _batches_per_pass(train.bounds, config.batch_size)
        self.chunks_per_epoch = -(-self.steps_per_epoch // config.batches_per_chunk)
        self.next_epoch = start_epoch
        # of the epoch under way: whole chunks, and batches of the next
        self.chunks_done, self.offset = divmod(batches_done, config.batches_per_chunk)
        self.chunk: Batch | None = None  # the chunk under way, once taken from the stream
        self.pace = Pacer()
        # Each process streams its rows of every batch, from its own share.
        local_rows, local_eval_rows = rows // jax.process_count(), eval_rows // jax.process_count()
        orders = local_orders(config, train, "train", range(start_epoch, config.num_epochs + 1))
        stream = streams.batch_chunks(
            train.images,
            train.labels,
            orders,
            parallel.process_part(config.batch_size),
            config.batches_per_chunk,
            local_rows,
            self.steps_per_epoch,
        )
        self.train_stream = streams.prefetch_to_device(
            stream.skip(self.chunks_done), self.chunk_sharding
        )
        self.eval_batches = {
            name: _batches_per_pass(share.bounds, config.eval_batch_size)
            for name, share in shares.items()
        }
        self.eval_streams = {
            name: streams.batch_chunks(
                share.images,
                share.labels,
                np.arange(len(share.labels))[None],
                parallel.process_part(config.eval_batch_size),
                1,
                local_eval_rows,
                self.eval_batches[name],
            )
            for name, share in shares.items()
        }
        # Every chunk has the same shape, so these two programs are all that is compiled.
        self.seed = np.uint32(config.seed)
        self.train_chunk, _ = compile_timed(
            functools.partial(
                _train_chunk,
                steps.train_step,
                real_row_counts(train.bounds, config.batch_size) if steps.stateful else None,
            ),
            state,
            _chunk_spec(config.batches_per_chunk, rows, self.chunk_sharding),
            self.seed,
            np.int32(0),
            np.int32(0),
            (np.int32(0), np.int32(1)),
            donate_argnums=(0,),
        )
        self.eval_chunk, _ = compile_timed(
            functools.partial(evaluate_over, steps.eval_step),
            state.variables,
            _chunk_spec(1, eval_rows, self.chunk_sharding),
        )

    def train_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_batch: OnBatch,
        should_stop: ShouldStop = never_stop,
    ) -> EpochRun:
        """Trains on the rest of the epoch, or until `should_stop` says so after a call."""
        if epoch != self.next_epoch:
            raise ValueError(f"the stream is at epoch {self.next_epoch}, not {epoch}")
        per_chunk = self.config.batches_per_chunk
        first_step, losses = self.chunks_done * per_chunk + self.offset, [np.zeros(0, np.float32)]
        while self.chunks_done < self.chunks_per_epoch:
            if self.chunk is None:
                self.chunk = next(self.train_stream)
            chunk_start = self.chunks_done * per_chunk
            real = min(per_chunk, self.steps_per_epoch - chunk_start)  # then padding alone
            while self.offset < real:
                start = self.offset
                span = self.pace.next_span(real - start)
                state, chunk_losses = self.pace.timed(
                    span,
                    self.train_chunk,
                    state,
                    self.chunk,
                    self.seed,
                    np.int32(epoch),
                    np.int32(chunk_start),
                    (np.int32(start), np.int32(start + span)),
                )
                losses.append(on_host(chunk_losses)[start : start + span])
                self.offset += span
                batches_done = chunk_start + self.offset
                on_batch(batches_done)
                if batches_done < self.steps_per_epoch and should_stop():
                    return EpochRun(state, False, batches_done, np.concatenate(losses), first_step)
            self.chunk, self.offset, self.chunks_done = None, 0, self.chunks_done + 1
        self.next_epoch, self.chunks_done = epoch + 1, 0
        return EpochRun(state, True, self.steps_per_epoch, np.concatenate(losses), first_step)

    def evaluate(
        self, variables: Variables, should_stop: ShouldStop = never_stop
    ) -> Totals | None:
        """Every split's correct predictions and summed loss: its batches' totals, added up, a
        batch a call; None if stopped part-way."""
        from mnist_jax.data import streams

        totals, remaining = {}, sum(self.eval_batches.values())
        for split, stream in self.eval_streams.items():
            correct, total_loss = 0, 0.0
            for chunk in streams.prefetch_to_device(stream, self.chunk_sharding):
                chunk_correct, chunk_loss = jax.block_until_ready(
                    self.eval_chunk(variables, chunk)
                )
                correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
                remaining -= 1
                if remaining and should_stop():
                    return None
            totals[split] = (correct, total_loss)
        return totals
