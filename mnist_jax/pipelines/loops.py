"""The loops every path compiles: the train step over a span of batches, the eval step over
batches, and ahead-of-time compilation.

A span's bounds may be traced, so that one compiled program runs any part of an epoch (see
`pacing`): a step computes the same whichever call it falls in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.models import Variables
from mnist_jax.steps import TrainState, on_real_rows

Span = tuple  # (start, stop): batches start..stop-1, Python ints or traced int32 scalars


def compile_timed(
    function: Callable, *example_args, donate_argnums: tuple[int, ...] = ()
) -> tuple[jax.stages.Compiled, float]:
    """`function` jitted and compiled ahead of time for arguments like `example_args`;
    returns the compiled program and the seconds compiling took."""
    start = time.perf_counter()
    compiled = jax.jit(function, donate_argnums=donate_argnums).lower(*example_args).compile()
    return compiled, time.perf_counter() - start


def _item(items, index):
    return jax.tree.map(lambda x: x[index], items)


def _num_batches(items) -> int:
    return jax.tree.leaves(items)[0].shape[0]


def train_over(
    train_step: Callable,
    state: TrainState,
    items,
    key: jax.Array,
    first_step: jax.Array | int = 0,
    to_batch: Callable = lambda item: item,
    may_be_empty: bool = True,
    real_rows: Sequence[int] | None = None,
    span: Span | None = None,
) -> tuple[TrainState, jax.Array]:
    """Runs the train step over batches (`to_batch` of each item along the leading axis), the
    i-th being step `first_step + i` of the epoch whose key is `key` (see `steps.epoch_key`):
    all of them, or the `span` `(start, stop)` alone. Returns the state and every batch's loss
    (zero for those not run).

    Batches that are all padding are skipped; `may_be_empty=False` says there are none, which
    spares each step the conditional (on a CPU it copies the whole state in and out). With
    `real_rows` (the numbers of real rows a batch can hold: for a model with state), each
    step trains on its batch's real rows alone (`steps.on_real_rows`)."""
    if real_rows is not None:
        train_step = on_real_rows(train_step, real_rows)
    num_batches = _num_batches(items)

    def run(state, batch, index):
        return train_step(state, batch, jax.random.fold_in(key, first_step + index))

    loss_type = jax.eval_shape(run, state, to_batch(_item(items, 0)), 0)[1]

    def step(index, carry):
        state, losses = carry
        batch = to_batch(_item(items, index))

        def skip(state):  # an all-padding batch: no update, a loss of zero
            return state, jnp.zeros((), loss_type.dtype)

        state, loss = (
            jax.lax.cond(batch.mask.any(), lambda s: run(s, batch, index), skip, state)
            if may_be_empty
            else run(state, batch, index)
        )
        return state, losses.at[index].set(loss)

    start, stop = span or (0, num_batches)
    return jax.lax.fori_loop(
        start, stop, step, (state, jnp.zeros((num_batches,), loss_type.dtype))
    )


def evaluate_batches(
    eval_step: Callable,
    variables: Variables,
    items,
    per_batch: tuple[jax.Array, jax.Array],
    span: Span,
    to_batch: Callable = lambda item: item,
) -> tuple[jax.Array, jax.Array]:
    """`per_batch` (each batch's correct predictions and summed loss) with those of the batches
    in `span` (`to_batch` of each item along the leading axis) filled in."""

    def step(index, per_batch):
        correct, loss = eval_step(variables, to_batch(_item(items, index)))
        return per_batch[0].at[index].set(correct), per_batch[1].at[index].set(loss)

    return jax.lax.fori_loop(*span, step, per_batch)


def no_batches_evaluated(
    eval_step: Callable, variables: Variables, items, to_batch: Callable = lambda item: item
) -> tuple[jax.Array, jax.Array]:
    """The per-batch results `evaluate_batches` fills in, all zero."""
    shapes = jax.eval_shape(eval_step, variables, to_batch(_item(items, 0)))
    return tuple(jnp.zeros((_num_batches(items),), s.dtype) for s in shapes)


def totals(per_batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over the batches: the one evaluation reduction every
    path uses."""
    return per_batch[0].sum(), per_batch[1].sum()


def evaluate_over(
    eval_step: Callable, variables: Variables, items, to_batch: Callable = lambda item: item
) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over all the batches (`to_batch` of each item along
    the leading axis)."""
    empty = no_batches_evaluated(eval_step, variables, items, to_batch)
    span = (0, _num_batches(items))
    return totals(evaluate_batches(eval_step, variables, items, empty, span, to_batch))


def on_host(values: jax.Array) -> np.ndarray:
    """A replicated array's values (in any process, whose copy is local)."""
    return np.asarray(values.addressable_data(0) if values.is_fully_replicated else values)
