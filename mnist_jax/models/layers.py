"""The layer the built-in models share: inverted dropout, driven by the harness's step key."""

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
