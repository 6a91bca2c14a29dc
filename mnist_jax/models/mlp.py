"""The seed notebook's MLP: plain functions over a list of (W, b) layers, and the `mlp` model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.config import Config, Hyperparameters, is_on, numbers, parameter_dtype
from mnist_jax.losses import log_softmax, summed_nll
from mnist_jax.models.interface import Model
from mnist_jax.models.layers import dropout

Layers = list[tuple[jax.Array, jax.Array]]  # the MLP's parameters: (W, b) for each layer
# Weight initializers scaled to a layer's fan: Glorot's for the era's tanh and sigmoid nets, He's
# for ReLU.
FAN_SCALED = {"glorot": jax.nn.initializers.glorot_uniform, "he": jax.nn.initializers.he_normal}


def init_params(
    seed: int | jax.Array,
    layer_sizes: Sequence[int] = (784, 200, 100, 10),
    sigma: float = 0.1,
    *,
    method: str = "jax",
    dtype: jnp.dtype = jnp.float32,
) -> Layers:
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
        return [
            (jnp.asarray(W, dtype), jnp.asarray(b, dtype))
            for W, b in numpy_draws(seed, layer_sizes, sigma)
        ]
    key = jax.random.key(seed) if isinstance(seed, int) else seed
    if method in FAN_SCALED:
        draw = FAN_SCALED[method]()
        return [
            (draw(k, w, dtype), jnp.zeros(b, dtype))
            for k, (w, b) in zip(jax.random.split(key, len(shapes)), shapes, strict=True)
        ]
    if method != "jax":
        raise ValueError(f"unknown init method {method!r}")
    keys = iter(jax.random.split(key, 2 * len(shapes)))
    return [
        (
            sigma * jax.random.normal(next(keys), w, dtype),
            sigma * jax.random.normal(next(keys), b, dtype),
        )
        for w, b in shapes
    ]


def numpy_draws(
    seed: int, layer_sizes: Sequence[int], sigma: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`sigma * randn` float64 weights and biases from `RandomState(seed)`, in the notebook's
    order."""
    rng = np.random.RandomState(seed)
    return [
        (sigma * rng.randn(m, n), sigma * rng.randn(n))
        for m, n in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
    ]


def logits(
    params: Layers,
    inputs: jax.Array,
    activation: str = "tanh",
    drop: Callable[[int, jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Unnormalised scores (N, 10) of flattened inputs (N, 784): hidden layers with
    `jax.nn.<activation>`.

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


def predict(params: Layers, inputs: jax.Array, activation: str = "tanh") -> jax.Array:
    """Log-probabilities (N, 10): hidden layers with `jax.nn.<activation>`, log-softmax output."""
    return log_softmax(logits(params, inputs, activation))


def loss(
    params: Layers,
    inputs: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    activation: str = "tanh",
) -> jax.Array:
    """The seed's objective: summed negative log-likelihood over the (unmasked) batch."""
    return summed_nll(predict(params, inputs, activation), labels, mask)


def accuracy(
    params: Layers, inputs: jax.Array, labels: jax.Array, activation: str = "tanh"
) -> jax.Array:
    """Fraction of `inputs` whose most likely class is the label."""
    return jnp.mean(jnp.argmax(predict(params, inputs, activation), axis=1) == labels)


def mlp(config: Config, hyperparameters: Hyperparameters | None = None) -> Model:
    """The seed notebook's MLP: `config.layer_sizes`, `sigma`, `activation` and `init`; in
    training, `input_dropout` on the pixels and `dropout` on each hidden layer's output (a grid
    cell's traced rates, if `hyperparameters` gives them).

    With `init="numpy"` the weights come from `RandomState(s)`, `s` the seed the harness made
    the key from (`jax.random.key(seed)`), in the notebook's order.
    """
    dtype = jnp.dtype(parameter_dtype(config))
    rates = numbers(config, hyperparameters)

    def init(key: jax.Array) -> Layers:
        if config.init != "numpy":
            return init_params(
                key, config.layer_sizes, config.sigma, method=config.init, dtype=dtype
            )

        # NumPy draws on the host, so that shapes can still be traced (jax.eval_shape, vmap).
        def draw(seed):
            draws = numpy_draws(int(seed), config.layer_sizes, config.sigma)
            return [(W.astype(dtype), b.astype(dtype)) for W, b in draws]

        sizes = config.layer_sizes
        shapes = [
            (jax.ShapeDtypeStruct((m, n), dtype), jax.ShapeDtypeStruct((n,), dtype))
            for m, n in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        return jax.pure_callback(
            draw, shapes, jax.random.key_data(key)[-1], vmap_method="sequential"
        )

    def apply(params: Layers, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        def drop(site: int, x: jax.Array) -> jax.Array:
            rate = rates["input_dropout"] if site == 0 else rates["dropout"]
            return dropout(x, rate, jax.random.fold_in(key, site))

        training = key is not None and (is_on(rates["dropout"]) or is_on(rates["input_dropout"]))
        return logits(
            params,
            images.reshape(images.shape[0], -1),
            config.activation,
            drop if training else None,
        )

    return Model(init, apply)
