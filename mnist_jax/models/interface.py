"""The `Model` interface: what a model gives the harness, and the one form the steps call."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any  # a pytree of arrays: what the optimizer trains
ModelState = Any  # a pytree of arrays the model updates as it trains, which no gradient reaches


class Model(NamedTuple):
    """A model: how to make its variables and how to apply them to images.

    `images` are floats in [0, 1] of shape (N, 28, 28, 1) in the run's dtype; logits are (N, 10).

    Without state (`stateful=False`, the default):

    - `init(key) -> params`, any pytree of arrays;
    - `apply(params, images[, key]) -> logits`. During training `apply` gets a fresh PRNG `key`
      each step (for dropout, say) if it takes a parameter named `key`; at evaluation, `None`.

    With state (`stateful=True`: BatchNorm's running statistics, say):

    - `init(key) -> (params, state)`, both pytrees of arrays;
    - `apply(params, state, images, *, key, training) -> (logits, state)`. In training
      (`training=True`, a fresh `key` each step) the state it returns replaces the old one; at
      evaluation (`training=False`, `key=None`) the state it returns is dropped.

    The harness never gives a stateful model the padding rows of a batch, so batch statistics
    are over real examples only. `mnist_jax.models.from_nnx`, `from_linen` and `from_equinox`
    make a `Model` of a Flax or Equinox module.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., Any]
    stateful: bool = False


class Variables(NamedTuple):
    """What evaluating a model reads: its parameters and its state (`()` for none)."""

    params: Params
    state: ModelState = ()


# (params, state, images, key, training) -> (logits, state): the form the steps call.
Apply = Callable[
    [Params, ModelState, jax.Array, "jax.Array | None", bool], tuple[jax.Array, ModelState]
]


def takes_key(apply: Callable) -> bool:
    """Whether `apply` has a parameter named `key`."""
    try:
        return "key" in inspect.signature(apply).parameters
    except (TypeError, ValueError):  # no signature to read: call it without one
        return False


def stateful_form(model: Model) -> tuple[Callable[[jax.Array], tuple[Params, ModelState]], Apply]:
    """`model`'s `init(key) -> (params, state)` and `apply(params, state, images, key, training)
    -> (logits, state)`: every model in one form. A model without state has the empty state
    `()`, which adds nothing to a compiled program."""
    if model.stateful:

        def apply(params, state, images, key, training):
            return model.apply(params, state, images, key=key, training=training)

        return model.init, apply
    keyed = takes_key(model.apply)

    def init_stateless(key):
        return model.init(key), ()

    def apply_stateless(params, state, images, key, training):
        return (model.apply(params, images, key) if keyed else model.apply(params, images)), state

    return init_stateless, apply_stateless
