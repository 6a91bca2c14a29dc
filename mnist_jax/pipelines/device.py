"""The `device` path: each split in device memory; one compiled program trains any span of an
epoch, one evaluates any span of the splits' batches, and each call is sized by `pacing`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_jax import data
from mnist_jax.config import Config, steps_per_epoch
from mnist_jax.models import Variables
from mnist_jax.pipelines.interface import EpochRun, OnBatch, ShouldStop, Totals, never_stop
from mnist_jax.pipelines.loops import (
    Span,
    compile_timed,
    evaluate_batches,
    evaluate_over,
    no_batches_evaluated,
    on_host,
    totals,
    train_over,
)
from mnist_jax.pipelines.pacing import Pacer, split_spans
from mnist_jax.runtime import parallel
from mnist_jax.steps import Batch, Steps, TrainState, epoch_key, on_real_rows


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
    """`(state, split, epoch, seed, span=None) -> (state, losses)`: an epoch's steps (all, or
    the `span` `(start, stop)` alone) as a single program, which shuffles on the device, then
    runs the train step over the batches. `seed` is an argument (not the config's) so that seed
    sweeps can vmap it."""
    rows, sharding = (
        parallel.rows_per_batch(config.batch_size, mesh),
        parallel.batch_sharding(mesh),
    )

    def train_epoch(
        state: TrainState,
        split: DeviceSplit,
        epoch: jax.Array,
        seed: jax.Array,
        span: Span | None = None,
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
        train = functools.partial(
            train_over, steps.train_step, key=key, to_batch=gather, may_be_empty=False
        )
        if not (steps.stateful and remainder):
            full = (config.batch_size,) if steps.stateful else None
            return train(state, batches, real_rows=full, span=span)
        # A model with state: the full batches, then the last one's real rows alone, each at a
        # shape of its own, so that no step needs a conditional.
        last = batches.shape[0] - 1
        start, stop = span or (0, last + 1)
        state, losses = train(
            state,
            batches[:-1],
            real_rows=(config.batch_size,),
            span=(start, jnp.minimum(stop, last) if span else last),
        )
        last_step = on_real_rows(steps.train_step, (remainder,))

        def train_last(state):
            return last_step(state, gather(batches[-1]), jax.random.fold_in(key, last))

        if span:  # the last step, if the span reaches it
            zero = jnp.zeros((), losses.dtype)
            state, loss = jax.lax.cond(stop > last, train_last, lambda s: (s, zero), state)
        else:
            state, loss = train_last(state)
        return state, jnp.concatenate([losses, loss[None]])

    return train_epoch


def _evaluation_items(config: Config, split: DeviceSplit, mesh: Mesh):
    """A split's evaluation batches: the rows of each, and how to gather one."""
    rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
    gather = functools.partial(_gather, split, sharding=parallel.batch_sharding(mesh))
    return _batch_rows(split.order, config.eval_batch_size, rows), gather


def evaluation_program(config: Config, steps: Steps, mesh: Mesh) -> Callable:
    """`(variables, splits) -> {split: (correct, summed loss)}` over every split given, as a single
    program."""

    def evaluate(variables: Variables, splits: dict[str, DeviceSplit]) -> Totals:
        return {
            name: evaluate_over(
                steps.eval_step, variables, *_evaluation_items(config, split, mesh)
            )
            for name, split in splits.items()
        }

    return evaluate


def evaluation_span_program(config: Config, steps: Steps, mesh: Mesh) -> Callable:
    """`(variables, splits, spans, per_batch) -> (per_batch, totals)`: each split's batches in
    `spans[split]` evaluated into its per-batch results, and the totals of them all."""

    def evaluate(variables, splits, spans, per_batch):
        per_batch = dict(per_batch)
        for name, split in splits.items():
            items, gather = _evaluation_items(config, split, mesh)
            per_batch[name] = evaluate_batches(
                steps.eval_step, variables, items, per_batch[name], spans[name], gather
            )
        return per_batch, {name: totals(results) for name, results in per_batch.items()}

    return evaluate


class DevicePipeline:
    """Each split read once into device memory, sharded across the devices (each process
    contributing its share). An epoch and an evaluation are one compiled call each where they
    are quick, and several sized by `pacing` where they are not."""

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
        self.splits = shard_splits(config, shares, mesh)
        self.seed = np.uint32(config.seed)
        self.steps_per_epoch = steps_per_epoch(config, shares["train"].total)
        self.batches_done = batches_done  # of the epoch under way
        self.train_program, _ = compile_timed(
            epoch_program(config, steps, mesh),
            state,
            self.splits["train"],
            np.int32(0),
            self.seed,
            (np.int32(0), np.int32(1)),
            donate_argnums=(0,),
        )
        shapes = jax.eval_shape(
            lambda v, splits: {
                name: no_batches_evaluated(
                    steps.eval_step, v, *_evaluation_items(config, split, mesh)
                )
                for name, split in splits.items()
            },
            state.variables,
            self.splits,
        )
        self.no_results = parallel.replicate(
            jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), mesh
        )
        # each split's evaluation batches: the length of its per-batch results
        self.eval_sizes = {name: results[0].shape[0] for name, results in shapes.items()}
        self.eval_program, _ = compile_timed(
            evaluation_span_program(config, steps, mesh),
            state.variables,
            self.splits,
            split_spans(dict.fromkeys(self.eval_sizes, 0), self.eval_sizes, 1),
            self.no_results,
        )
        self.train_pace, self.eval_pace = Pacer(), Pacer()

    def train_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_batch: OnBatch,
        should_stop: ShouldStop = never_stop,
    ) -> EpochRun:
        """Trains on the rest of the epoch, or until `should_stop` says so after a call."""
        first_step = done = self.batches_done
        losses = [np.zeros(0, np.float32)]
        while done < self.steps_per_epoch:
            span = self.train_pace.next_span(self.steps_per_epoch - done)
            state, batch_losses = self.train_pace.timed(
                span,
                self.train_program,
                state,
                self.splits["train"],
                np.int32(epoch),
                self.seed,
                (np.int32(done), np.int32(done + span)),
            )
            losses.append(on_host(batch_losses)[done : done + span])
            done += span
            on_batch(done)
            if done < self.steps_per_epoch and should_stop():
                self.batches_done = done
                return EpochRun(state, False, done, np.concatenate(losses), first_step)
        self.batches_done = 0
        return EpochRun(state, True, done, np.concatenate(losses), first_step)

    def evaluate(
        self, variables: Variables, should_stop: ShouldStop = never_stop
    ) -> Totals | None:
        """Every split's correct predictions and summed loss; None if stopped part-way."""
        done, per_batch, results = dict.fromkeys(self.eval_sizes, 0), self.no_results, None
        remaining = sum(self.eval_sizes.values())
        while remaining:
            count = self.eval_pace.next_span(remaining)
            spans = split_spans(done, self.eval_sizes, count)
            per_batch, results = self.eval_pace.timed(
                count, self.eval_program, variables, self.splits, spans, per_batch
            )
            done = {name: int(stop) for name, (_, stop) in spans.items()}
            remaining -= count
            if remaining and should_stop():
                return None
        return results
