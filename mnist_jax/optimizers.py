"""A recipe's optimizer: the Optax optimizer by name (or a factory), its learning-rate schedule,
decoupled weight decay and gradient clipping, chained in Optax's order."""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mnist_jax.config import (
    MNIST_TRAIN_SIZE,
    OBJECT_PREFIX,
    Config,
    Hyperparameters,
    is_on,
    numbers,
    optimizer_by_name,
    steps_per_epoch,
)
from mnist_jax.errors import ConfigError
from mnist_jax.factories import call_factory


def learning_rate_schedule(
    config: Config, train_size: int | None = None, peak: float | jax.Array | None = None
) -> optax.ScalarOrSchedule:
    """The learning rate (`peak`, default `config.learning_rate`) shaped by `config.schedule` over
    the run's steps: `num_epochs` of `train_size` examples (default: MNIST's training split less
    the validation rows)."""
    peak = config.learning_rate if peak is None else peak
    if config.schedule == "constant":
        return peak
    if not isinstance(peak, (int, float)):
        # A traced rate (a grid's): optax's schedules branch on their peak, so shape 1.0 and scale.
        unit = learning_rate_schedule(config, train_size, peak=1.0)
        return lambda step: peak * unit(step)
    epoch = steps_per_epoch(config, train_size or MNIST_TRAIN_SIZE - config.validation_size)
    total = config.num_epochs * epoch
    # At least a step of warmup and one after it, however few steps an epoch has.
    warmup = round(config.warmup_epochs * epoch)
    warmup = min(max(warmup, 1), max(total - 1, 1)) if config.warmup_epochs else 0
    total = max(total, warmup + 1)
    return {
        "cosine": lambda: optax.cosine_decay_schedule(peak, total),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total),
        "linear": lambda: optax.linear_schedule(peak, 0.0, total),
        "onecycle": lambda: optax.cosine_onecycle_schedule(total, peak, pct_start=warmup / total),
    }[config.schedule]()


def decays(params) -> Any:
    """The weight-decay mask: True for weights and kernels, False for biases (fewer than 2
    dims)."""
    return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def make_optimizer(
    config: Config, train_size: int | None = None, hyperparameters: Hyperparameters | None = None
) -> optax.GradientTransformation:
    """`optax.<config.optimizer>` (Adam by default) with the config's learning rate (shaped by its
    schedule), and its `b1`, `b2`, `eps`, `momentum` and `nesterov` where the optimizer takes them;
    or, for an import path, `factory(config)`. Then the recipe's parts, in Optax's order:
    `clip_by_global_norm` first; decoupled weight decay added to the optimizer's direction before
    the learning-rate scaling, as `optax.adamw` does, sparing biases. A grid cell's traced
    `hyperparameters` replace the config's numbers."""
    if config.optimizer.startswith(OBJECT_PREFIX):
        raise ConfigError(
            f"optimizer {config.optimizer!r} was a Python object: pass the same object again "
            "(train(config, optimizer=...)); the command line cannot rebuild it"
        )
    if not optimizer_by_name(config):
        optimizer = call_factory(config.optimizer, config, "optimizer")
        if not isinstance(optimizer, optax.GradientTransformation):
            raise ConfigError(
                f"optimizer {config.optimizer!r}: the factory returned "
                f"{type(optimizer).__name__}, "
                "not an optax.GradientTransformation"
            )
        return optimizer
    build = getattr(optax, config.optimizer)
    accepted = inspect.signature(build).parameters
    values = numbers(config, hyperparameters) | {"nesterov": config.nesterov}
    extras = {
        name: values[name]
        for name in ("b1", "b2", "eps", "momentum", "nesterov")
        if name in accepted and values[name] is not None
    }
    learning_rate = learning_rate_schedule(config, train_size, values["learning_rate"])
    if is_on(values["weight_decay"]):
        # Optax's optimizers end by scaling with -learning_rate: built with 1.0 they give the
        # negated direction, to which the (negated) decay is added before the real scaling.
        optimizer = optax.chain(
            build(1.0, **extras),
            optax.add_decayed_weights(-values["weight_decay"], decays),
            optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        )
    else:
        optimizer = build(learning_rate, **extras)
    if not is_on(values["clip_norm"]):
        return optimizer
    return optax.chain(optax.clip_by_global_norm(values["clip_norm"]), optimizer)
