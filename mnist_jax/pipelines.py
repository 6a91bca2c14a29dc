"""The data paths, behind one `Pipeline` interface: how a run's batches reach the compiled steps.

- `device`: each split in device memory; an epoch and an evaluation are one compiled call each.
- `stream`: tf.data chunks of batches put on the devices ahead of use, one compiled call a chunk.

Both draw each epoch's order from `data.epoch_order`, so for the same config they train on the
same batches and reach the same parameters (to float tolerance). Both run on a 1-D device
mesh: every batch is sharded across the devices, parameters and optimizer state are
replicated, and XLA adds the cross-device sums; the global batch stays `batch_size`.

Glossary:
- split: a dataset split (train, validation, test); a sharding is how an array lies on devices.
- share: this process's contiguous part of a split, in tfds's stored order (`data.Share`);
  `bounds[q]:bounds[q + 1]` are process q's positions in the split.
- rows: a batch's rows, padded up to a multiple of the device count (padding is masked).
- chunk: `batches_per_chunk` batches stacked, the unit the stream transfers and trains on.

At most one compiled call is in flight at a time: several CPU devices in one process can
deadlock in an all-reduce when many are queued, and each call is long (a chunk or an epoch).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_jax import data
from mnist_jax.config import Config
from mnist_jax.errors import ConfigError
from mnist_jax.models import Variables
from mnist_jax.runtime import parallel
from mnist_jax.steps import Batch, Steps, TrainState, epoch_key, on_real_rows

OnBatch = Callable[[int], None]
ShouldStop = Callable[[], bool]


def never_stop() -> bool:
    """The default `should_stop`: train the whole epoch."""
    return False


class EpochRun(NamedTuple):
    """What one `train_epoch` call did: the new state, whether it `completed` the epoch, the
    epoch's batches done so far, and the training loss of every step it ran, from the epoch's
    step `first_step` (0-based)."""

    state: TrainState
    completed: bool
    batches_done: int
    losses: np.ndarray
    first_step: int


class Pipeline(Protocol):
    """A data path. Built by `make_pipeline`, which compiles its programs ahead of time."""

    def train_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_batch: OnBatch,
        should_stop: ShouldStop = never_stop,
    ) -> EpochRun:
        """Trains on epoch `epoch` (1-based, in order), calling `on_batch(batches_done)` after
        each compiled call; may stop part-way once `should_stop()` is true."""

    def evaluate(self, variables: Variables) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Every split's correct predictions and summed loss."""


def compile_timed(
    function: Callable, *example_args, donate_argnums: tuple[int, ...] = ()
) -> tuple[jax.stages.Compiled, float]:
    """`function` jitted and compiled ahead of time for arguments like `example_args`;
    returns the compiled program and the seconds compiling took."""
    start = time.perf_counter()
    compiled = jax.jit(function, donate_argnums=donate_argnums).lower(*example_args).compile()
    return compiled, time.perf_counter() - start


def train_over(
    train_step: Callable,
    state: TrainState,
    items,
    key: jax.Array,
    first_step: jax.Array | int = 0,
    to_batch: Callable = lambda item: item,
    may_be_empty: bool = True,
    real_rows: Sequence[int] | None = None,
) -> tuple[TrainState, jax.Array]:
    """Scans the train step over batches (`to_batch` of each item along the leading axis), the
    i-th being step `first_step + i` of the epoch whose key is `key` (see `steps.epoch_key`).
    Batches that are all padding are skipped; `may_be_empty=False` says there are none, which
    spares each step the conditional (on a CPU it copies the whole state in and out). With
    `real_rows` (the numbers of real rows a batch can hold: for a model with state), each
    step trains on its batch's real rows alone (`steps.on_real_rows`)."""
    if real_rows is not None:
        train_step = on_real_rows(train_step, real_rows)

    def step(state, item_and_index):
        item, index = item_and_index
        batch = to_batch(item)

        def run(state):
            return train_step(state, batch, jax.random.fold_in(key, first_step + index))

        def skip(state):  # an all-padding batch: no update, a loss of zero
            return state, jnp.zeros((), jax.eval_shape(run, state)[1].dtype)

        return jax.lax.cond(batch.mask.any(), run, skip, state) if may_be_empty else run(state)

    num_batches = jax.tree.leaves(items)[0].shape[0]
    return jax.lax.scan(step, state, (items, jnp.arange(num_batches)))


def evaluate_over(
    eval_step: Callable, variables: Variables, items, to_batch: Callable = lambda item: item
) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over batches (`to_batch` of each item along the
    leading axis): the one evaluation reduction every path uses."""
    correct, losses = jax.lax.map(lambda item: eval_step(variables, to_batch(item)), items)
    return correct.sum(), losses.sum()


def _on_host(values: jax.Array) -> np.ndarray:
    """A replicated array's values (in any process, whose copy is local)."""
    return np.asarray(values.addressable_data(0) if values.is_fully_replicated else values)


# The stream path ------------------------------------------------------------------------------


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
) -> tuple[TrainState, jax.Array]:
    """The train step over a chunk's batches, the chunk's first being step `first_step` of the
    epoch."""
    return train_over(
        train_step, state, chunk, epoch_key(seed, epoch), first_step, real_rows=real_rows
    )


class StreamPipeline:
    """tf.data chunks of batches, put on the devices two ahead of use, each trained on by one
    compiled scan of the train step. One tf.data stream covers every epoch from the start
    position on, so it is built (and its functions traced) once, and its prefetching runs on
    across epoch boundaries.
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
        self.chunks_done = batches_done // config.batches_per_chunk  # of the epoch under way
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
        self.eval_streams = {
            name: streams.batch_chunks(
                share.images,
                share.labels,
                np.arange(len(share.labels))[None],
                parallel.process_part(config.eval_batch_size),
                1,
                local_eval_rows,
                _batches_per_pass(share.bounds, config.eval_batch_size),
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
        """Trains on the rest of the epoch, or until `should_stop` says so after a chunk."""
        if epoch != self.next_epoch:
            raise ValueError(f"the stream is at epoch {self.next_epoch}, not {epoch}")
        first_step, losses = self.chunks_done * self.config.batches_per_chunk, []
        while self.chunks_done < self.chunks_per_epoch:
            first = np.int32(self.chunks_done * self.config.batches_per_chunk)
            state, chunk_losses = jax.block_until_ready(
                self.train_chunk(state, next(self.train_stream), self.seed, np.int32(epoch), first)
            )
            losses.append(chunk_losses)  # stays on the device until the epoch ends
            self.chunks_done += 1
            batches_done = min(
                self.chunks_done * self.config.batches_per_chunk, self.steps_per_epoch
            )
            on_batch(batches_done)
            if should_stop() and self.chunks_done < self.chunks_per_epoch:
                return EpochRun(
                    state,
                    False,
                    batches_done,
                    np.concatenate([_on_host(x) for x in losses]),
                    first_step,
                )
        self.next_epoch, self.chunks_done = epoch + 1, 0
        steps = np.concatenate([_on_host(x) for x in losses])[: self.steps_per_epoch - first_step]
        return EpochRun(state, True, self.steps_per_epoch, steps, first_step)

    def evaluate(self, variables: Variables) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Every split's correct predictions and summed loss: its chunks' totals, added up."""
        from mnist_jax.data import streams

        totals = {}
        for split, stream in self.eval_streams.items():
            correct, total_loss = 0, 0.0
            for chunk in streams.prefetch_to_device(stream, self.chunk_sharding):
                chunk_correct, chunk_loss = jax.block_until_ready(
                    self.eval_chunk(variables, chunk)
                )
                correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
            totals[split] = (correct, total_loss)
        return totals


# The device path ------------------------------------------------------------------------------


class DeviceSplit(NamedTuple):
    """A dataset split in device memory, sharded across the mesh, and its rows in base order
    (tfds's, or the raw files' for an unshuffled training split)."""

    images: jax.Array
    labels: jax.Array
    order: jax.Array


def shard_splits(
    config: Config, shares: dict[str, data.Share], mesh: Mesh
) -> dict[str, DeviceSplit]:
    """Every split in device memory, each process contributing its share."""
    return {
        name: to_device(name, share, mesh, in_file_order=name == "train" and not config.shuffle)
        for name, share in shares.items()
    }


def to_device(
    split: str, share: data.Share, mesh: Mesh, in_file_order: bool = False
) -> DeviceSplit:
    """One split in device memory, its base order tfds's (or with `in_file_order`, the raw
    files')."""
    images, labels, rows_of = parallel.shard_split(share.images, share.labels, share.bounds, mesh)
    order = rows_of[data.file_order(split, share.total)] if in_file_order else rows_of
    return DeviceSplit(images, labels, parallel.replicate(order, mesh))


def _batch_rows(order: jax.Array, batch_size: int, rows: int) -> jax.Array:
    """`order` cut into batches of `rows` rows (-1 for padding): (batches, rows)."""
    return data.pad_to_batches(order[None], batch_size, rows, xp=jnp)[0, :, 0]


def _gather(split: DeviceSplit, indices: jax.Array, sharding) -> Batch:
    """The batch at `indices` (-1 for padding), sharded across the devices."""
    rows = jnp.maximum(indices, 0)
    batch = Batch(split.images[rows], split.labels[rows], indices >= 0)
    return jax.lax.with_sharding_constraint(batch, sharding)


def epoch_program(config: Config, steps: Steps, mesh: Mesh) -> Callable:
    """`(state, split, epoch, seed) -> (state, losses)`: one epoch as a single program, which
    shuffles on the device, then scans the train step over the batches. `seed` is an argument
    (not the config's) so that seed sweeps can vmap it."""
    rows, sharding = (
        parallel.rows_per_batch(config.batch_size, mesh),
        parallel.batch_sharding(mesh),
    )

    def scan_epoch(
        state: TrainState, split: DeviceSplit, epoch: jax.Array, seed: jax.Array
    ) -> tuple[TrainState, jax.Array]:
        order = (
            split.order[data.epoch_order(seed, epoch, split.order.shape[0])]
            if config.shuffle
            else split.order
        )
        batches = _batch_rows(order, config.batch_size, rows)
        key, gather = epoch_key(seed, epoch), functools.partial(_gather, split, sharding=sharding)
        # Only the last batch holds padding, and not only padding.
        remainder = split.order.shape[0] % config.batch_size
        if not (steps.stateful and remainder):
            full = (config.batch_size,) if steps.stateful else None
            return train_over(
                steps.train_step,
                state,
                batches,
                key,
                to_batch=gather,
                may_be_empty=False,
                real_rows=full,
            )
        # A model with state: the full batches, then the last one's real rows alone, each at a
        # shape of its own, so that no step needs a conditional.
        state, losses = train_over(
            steps.train_step,
            state,
            batches[:-1],
            key,
            to_batch=gather,
            may_be_empty=False,
            real_rows=(config.batch_size,),
        )
        last_step = on_real_rows(steps.train_step, (remainder,))
        state, loss = last_step(
            state, gather(batches[-1]), jax.random.fold_in(key, batches.shape[0] - 1)
        )
        return state, jnp.concatenate([losses, loss[None]])

    return scan_epoch


def evaluation_program(config: Config, steps: Steps, mesh: Mesh) -> Callable:
    """`(variables, splits) -> {split: (correct, summed loss)}` over every split given, as a single
    program."""
    rows, sharding = (
        parallel.rows_per_batch(config.eval_batch_size, mesh),
        parallel.batch_sharding(mesh),
    )

    def evaluate(
        variables: Variables, splits: dict[str, DeviceSplit]
    ) -> dict[str, tuple[jax.Array, jax.Array]]:
        return {
            name: evaluate_over(
                steps.eval_step,
                variables,
                _batch_rows(split.order, config.eval_batch_size, rows),
                functools.partial(_gather, split, sharding=sharding),
            )
            for name, split in splits.items()
        }

    return evaluate


class DevicePipeline:
    """Each split read once into device memory, sharded across the devices (each process
    contributing its share); an epoch and an evaluation are one call each. An epoch cannot
    stop part-way, so a start position must be at an epoch's beginning."""

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
        if batches_done:
            raise ValueError(
                f"the device path trains whole epochs; cannot start {batches_done} batches "
                f"into epoch {start_epoch}"
            )
        self.splits = shard_splits(config, shares, mesh)
        self.seed = np.uint32(config.seed)
        self.train_program, _ = compile_timed(
            epoch_program(config, steps, mesh),
            state,
            self.splits["train"],
            np.int32(0),
            self.seed,
            donate_argnums=(0,),
        )
        self.eval_program, _ = compile_timed(
            evaluation_program(config, steps, mesh), state.variables, self.splits
        )

    def train_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_batch: OnBatch,
        should_stop: ShouldStop = never_stop,
    ) -> EpochRun:
        """Trains on the whole epoch (one call: it cannot stop part-way)."""
        state, batch_losses = jax.block_until_ready(
            self.train_program(state, self.splits["train"], np.int32(epoch), self.seed)
        )
        on_batch(batch_losses.shape[0])
        return EpochRun(state, True, batch_losses.shape[0], _on_host(batch_losses), 0)

    def evaluate(self, variables: Variables) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Every split's correct predictions and summed loss, in one call."""
        return jax.block_until_ready(self.eval_program(variables, self.splits))


PIPELINES: dict[str, type[StreamPipeline] | type[DevicePipeline]] = {
    "device": DevicePipeline,
    "stream": StreamPipeline,
}


def check_pipeline(config: Config) -> None:
    """Raises ConfigError unless `config.pipeline` names a data path."""
    if config.pipeline not in PIPELINES:
        raise ConfigError(
            f"pipeline must be one of {', '.join(PIPELINES)}, got {config.pipeline!r}"
        )


def make_pipeline(
    config: Config,
    steps: Steps,
    shares: dict[str, data.Share],
    state: TrainState,
    mesh: Mesh,
    start_epoch: int = 1,
    batches_done: int = 0,
) -> Pipeline:
    """The config's data path over `shares`, compiled for `state`'s shapes and shardings, ready
    to train from `batches_done` batches into epoch `start_epoch`."""
    check_pipeline(config)
    return PIPELINES[config.pipeline](
        config, steps, shares, state, mesh, start_epoch, batches_done
    )
