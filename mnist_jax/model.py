"""The seed notebook's MLP as plain functions over a list of (W, b) layers."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

Params = list[tuple[jax.Array, jax.Array]]


def init_params(
    seed: int | jax.Array,
    layer_sizes: Sequence[int] = (784, 200, 100, 10),
    sigma: float = 0.1,
    *,
    method: str = "jax",
    dtype: jnp.dtype = jnp.float32,
) -> Params:
    """Weights and biases drawn as `sigma * N(0, 1)`.

    `method="numpy"` draws from `numpy.random.RandomState(seed)` in the seed
    notebook's order (W then b, layer by layer); `method="jax"` from
    `jax.random` with `seed` an int or a key.
    """
    shapes = [((m, n), (n,)) for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]
    if method == "numpy":
        rng = np.random.RandomState(seed)
        draw = lambda shape: sigma * rng.randn(*shape)  # noqa: E731
        return [(jnp.asarray(draw(w), dtype), jnp.asarray(draw(b), dtype)) for w, b in shapes]
    if method != "jax":
        raise ValueError(f"unknown init method {method!r}")
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    keys = iter(jax.random.split(key, 2 * len(shapes)))
    return [
        (sigma * jax.random.normal(next(keys), w, dtype), sigma * jax.random.normal(next(keys), b, dtype))
        for w, b in shapes
    ]


def predict(params: Params, inputs: jax.Array, activation: str = "tanh") -> jax.Array:
    """Log-probabilities (N, 10): hidden layers with `jax.nn.<activation>`, log-softmax output."""
    *hidden, (W_out, b_out) = params
    nonlinearity = getattr(jax.nn, activation)
    for W, b in hidden:
        inputs = nonlinearity(inputs @ W + b)
    logits = inputs @ W_out + b_out
    return logits - logsumexp(logits, axis=1, keepdims=True)


def summed_nll(log_probs: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Summed negative log-likelihood of integer `labels`; rows with mask False count nothing."""
    picked = jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    return -jnp.sum(picked if mask is None else jnp.where(mask, picked, 0))


def loss(params: Params, inputs: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
         activation: str = "tanh") -> jax.Array:
    """The seed's objective: summed negative log-likelihood over the (unmasked) batch."""
    return summed_nll(predict(params, inputs, activation), labels, mask)


def accuracy(params: Params, inputs: jax.Array, labels: jax.Array, activation: str = "tanh") -> jax.Array:
    """Fraction of `inputs` whose most likely class is the label."""
    return jnp.mean(jnp.argmax(predict(params, inputs, activation), axis=1) == labels)
