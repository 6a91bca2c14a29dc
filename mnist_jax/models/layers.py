"""The layers the built-in models share beside their matmuls and convolutions: inverted dropout,
driven by the harness's step key, and BatchNorm, its running statistics passed explicitly."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mnist_jax.config import is_on


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: each value zeroed with probability `rate`, the rest scaled by
    1 / (1 - rate); `x` unchanged at evaluation (`key` None) or at rate 0."""
    if key is None or not is_on(rate):
        return x
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)


# Flax's and Keras's defaults: the running statistics' decay per step, and the variance's floor.
BATCHNORM_MOMENTUM, BATCHNORM_EPSILON = 0.99, 1e-5


def batchnorm_state(channels: int, dtype: jnp.dtype) -> dict[str, jax.Array]:
    """BatchNorm's running statistics before any training: mean 0 and variance 1 per channel."""
    return {"mean": jnp.zeros(channels, dtype), "var": jnp.ones(channels, dtype)}


def batch_norm(
    x: jax.Array, scale: jax.Array, running: dict[str, jax.Array], training: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BatchNorm without its offset (the layer's bias adds it): each channel (`x`'s last axis)
    standardised by its mean and variance over every other axis, then multiplied by `scale`.
    In training the batch's statistics are used and folded into `running` (decay
    `BATCHNORM_MOMENTUM`); at evaluation `running`'s are used and returned unchanged. The
    statistics are taken in `running`'s dtype, the result given in `x`'s."""
    wide = x.astype(running["mean"].dtype)  # under bfloat16's mixed precision, float32
    if training:
        axes = tuple(range(x.ndim - 1))
        mean, var = wide.mean(axes), wide.var(axes)
        decay = BATCHNORM_MOMENTUM
        running = {
            "mean": decay * running["mean"] + (1 - decay) * jax.lax.stop_gradient(mean),
            "var": decay * running["var"] + (1 - decay) * jax.lax.stop_gradient(var),
        }
    else:
        mean, var = running["mean"], running["var"]
    normalized = (wide - mean) * (jax.lax.rsqrt(var + BATCHNORM_EPSILON) * scale)
    return normalized.astype(x.dtype), running
