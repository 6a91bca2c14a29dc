"""The pure, jit-ready training step and evaluation step, bound once to a model and an optimizer."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax.config import Config
from mnist_jax.model import Params, init_params, predict, summed_nll

Apply = Callable[[Params, jax.Array], jax.Array]  # (params, inputs) -> log-probabilities


class Batch(NamedTuple):
    """A fixed-size minibatch; `mask` is False for padding rows past the split's end."""

    images: np.ndarray | jax.Array  # (B, 28, 28, 1) uint8
    labels: np.ndarray | jax.Array  # (B,) int32
    mask: np.ndarray | jax.Array  # (B,) bool


class TrainState(NamedTuple):
    """Everything a step changes."""

    params: Params
    opt_state: optax.OptState


class Steps(NamedTuple):
    """A run's model and optimizer, bound once: what every data path, sweep and score calls."""

    init: Callable[[int], TrainState]  # seed -> initial parameters and optimizer state
    train_step: Callable[[TrainState, Batch], tuple[TrainState, jax.Array]]  # -> new state, summed loss
    eval_step: Callable[[Params, Batch], tuple[jax.Array, jax.Array]]  # -> correct count, summed loss


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """`optax.<config.optimizer>` (Adam by default) with the config's learning rate, and its
    `b1`, `b2` and `eps` where the optimizer takes them."""
    build = getattr(optax, config.optimizer)
    accepted = inspect.signature(build).parameters
    extras = {name: getattr(config, name) for name in ("b1", "b2", "eps") if name in accepted}
    return build(config.learning_rate, **extras)


def normalise(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Flattens uint8 images to (N, 784) and divides by 255, as the seed did."""
    return images.reshape(images.shape[0], -1).astype(dtype) / 255


def train_step(state: TrainState, batch: Batch, *, apply: Apply,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
    """One optimizer step on the batch's summed loss; returns the new state and that loss."""
    def batch_loss(params):
        inputs = normalise(batch.images, jax.tree.leaves(params)[0].dtype)
        return summed_nll(apply(params, inputs), batch.labels, batch.mask)

    value, grads = jax.value_and_grad(batch_loss)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), value


def eval_step(params: Params, batch: Batch, *, apply: Apply) -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over the batch's real rows."""
    log_probs = apply(params, normalise(batch.images, jax.tree.leaves(params)[0].dtype))
    correct = jnp.sum((jnp.argmax(log_probs, axis=1) == batch.labels) & batch.mask, dtype=jnp.int32)
    return correct, summed_nll(log_probs, batch.labels, batch.mask)


def init_state(config: Config, seed: int | None = None) -> TrainState:
    """Initial parameters and optimizer state for `config` (with another `seed` if given)."""
    params = init_params(config.seed if seed is None else seed, config.layer_sizes, config.sigma,
                         method=config.init, dtype=jnp.dtype(config.dtype))
    return TrainState(params, make_optimizer(config).init(params))


def make_steps(config: Config) -> Steps:
    """The config's model (the MLP with its activation) and optimizer, bound into the steps."""
    apply = functools.partial(predict, activation=config.activation)
    return Steps(init=functools.partial(init_state, config),
                 train_step=functools.partial(train_step, apply=apply, optimizer=make_optimizer(config)),
                 eval_step=functools.partial(eval_step, apply=apply))


def split_metrics(split: str, correct, total_loss, num_examples: int) -> dict:
    """Evaluation totals over a split as the recorded metrics: accuracy and mean loss per example.

    Works on scalars and on arrays (one value per seed of a sweep) alike.
    """
    return {f"{split}_accuracy": np.asarray(correct, np.float64) / num_examples,
            f"{split}_loss": np.asarray(total_loss, np.float64) / num_examples}


def precision(config: Config) -> contextlib.AbstractContextManager:
    """JAX's 64-bit mode for a float64 config, for the duration of a run."""
    return jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()
