"""The seed notebook's MLP as plain functions over a list of (W, b) layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

Params = list[tuple[jax.Array, jax.Array]]
# Weight initializers scaled to a layer's fan: Glorot's for the era's tanh and sigmoid nets, He's for ReLU.
FAN_SCALED = {"glorot": jax.nn.initializers.glorot_uniform, "he": jax.nn.initializers.he_normal}


def init_params(
    seed: int | jax.Array,
    layer_sizes: Sequence[int] = (784, 200, 100, 10),
    sigma: float = 0.1,
    *,
    method: str = "jax",
    dtype: jnp.dtype = jnp.float32,
) -> Params:
    """Weights and biases drawn as `sigma * N(0, 1)`, or scaled to each layer's fan.

    `method="numpy"` draws from `numpy.random.RandomState(seed)` in the seed
    notebook's order (W then b, layer by layer); `method="jax"` from
    `jax.random` with `seed` an int or a key. `"glorot"` (Glorot and Bengio, 2010: uniform with
    variance 2 / (fan_in + fan_out)) and `"he"` (He et al., 2015: normal with variance 2 / fan_in,
    for ReLU layers) draw the weights from `jax.random` and start the biases at zero; `sigma`
    does not apply to them.
    """
    shapes = [((m, n), (n,)) for m, n in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)]
    if method == "numpy":
        return [(jnp.asarray(W, dtype), jnp.asarray(b, dtype)) for W, b in numpy_draws(seed, layer_sizes, sigma)]
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    if method in FAN_SCALED:
        draw = FAN_SCALED[method]()
        return [(draw(k, w, dtype), jnp.zeros(b, dtype)) for k, (w, b) in zip(jax.random.split(key, len(shapes)),
                                                                           shapes, strict=True)]
    if method != "jax":
        raise ValueError(f"unknown init method {method!r}")
    keys = iter(jax.random.split(key, 2 * len(shapes)))
    return [
        (sigma * jax.random.normal(next(keys), w, dtype), sigma * jax.random.normal(next(keys), b, dtype))
        for w, b in shapes
    ]


def numpy_draws(seed: int, layer_sizes: Sequence[int], sigma: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """`sigma * randn` float64 weights and biases from `RandomState(seed)`, in the notebook's order."""
    rng = np.random.RandomState(seed)
    return [(sigma * rng.randn(m, n), sigma * rng.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)]


def logits(params: Params, inputs: jax.Array, activation: str = "tanh",
           drop: Callable[[int, jax.Array], jax.Array] | None = None) -> jax.Array:
    """Unnormalised scores (N, 10) of flattened inputs (N, 784): hidden layers with `jax.nn.<activation>`.

    `drop(site, x)`, if given (dropout, in training), is applied to the inputs (site 0) and to
    each hidden layer's output (sites 1, 2, ...).
    """
    *hidden, (W_out, b_out) = params
    nonlinearity = getattr(jax.nn, activation)
    if drop:
        inputs = drop(0, inputs)
    for site, (W, b) in enumerate(hidden, 1):
        inputs = nonlinearity(inputs @ W + b)
        if drop:
            inputs = drop(site, inputs)
    return inputs @ W_out + b_out


def log_softmax(scores: jax.Array) -> jax.Array:
    """Log-probabilities from scores, as the seed computed them."""
    return scores - logsumexp(scores, axis=1, keepdims=True)


def predict(params: Params, inputs: jax.Array, activation: str = "tanh") -> jax.Array:
    """Log-probabilities (N, 10): hidden layers with `jax.nn.<activation>`, log-softmax output."""
    return log_softmax(logits(params, inputs, activation))


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
