"""The pure, jit-ready pieces of training: state, optimizer, train and eval steps."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mnist_jax.config import Config
from mnist_jax.data import Batch
from mnist_jax.model import Params, init_params, loss, predict, summed_nll


class TrainState(NamedTuple):
    """Everything a step changes."""

    params: Params
    opt_state: optax.OptState


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """`optax.<config.optimizer>` (Adam by default) with the config's learning rate, and its
    `b1`, `b2` and `eps` where the optimizer takes them."""
    build = getattr(optax, config.optimizer)
    accepted = inspect.signature(build).parameters
    extras = {name: getattr(config, name) for name in ("b1", "b2", "eps") if name in accepted}
    return build(config.learning_rate, **extras)


def init_state(config: Config) -> TrainState:
    """Initial parameters and optimizer state for `config`."""
    params = init_params(config.seed, config.layer_sizes, config.sigma,
                         method=config.init, dtype=jnp.dtype(config.dtype))
    return TrainState(params, make_optimizer(config).init(params))


def normalise(images: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Flattens uint8 images to (N, 784) and divides by 255, as the seed did."""
    return images.reshape(images.shape[0], -1).astype(dtype) / 255


def train_step(state: TrainState, batch: Batch, optimizer: optax.GradientTransformation,
               activation: str = "tanh") -> tuple[TrainState, jax.Array]:
    """One optimizer step on the batch's summed loss; returns the new state and that loss."""
    inputs = normalise(batch.images, state.params[0][0].dtype)
    batch_loss, grads = jax.value_and_grad(loss)(state.params, inputs, batch.labels, batch.mask, activation)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), batch_loss


def eval_step(params: Params, batch: Batch, activation: str = "tanh") -> tuple[jax.Array, jax.Array]:
    """Correct predictions and summed loss over the batch's real rows."""
    log_probs = predict(params, normalise(batch.images, params[0][0].dtype), activation)
    correct = jnp.sum((jnp.argmax(log_probs, axis=1) == batch.labels) & batch.mask, dtype=jnp.int32)
    return correct, summed_nll(log_probs, batch.labels, batch.mask)
