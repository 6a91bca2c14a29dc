"""The `Model` interface and the built-in models: the seed's MLP and the CNN of Flax's example."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mnist_jax import conv
from mnist_jax.config import OBJECT_PREFIX, Config, cnn_feature_side, is_on
from mnist_jax.errors import ConfigError
from mnist_jax.factories import call_factory
from mnist_jax.mlp import Params, init_params, logits, numpy_draws


class Model(NamedTuple):
    """A model: `init(key) -> params` (any pytree of arrays) and `apply(params, images[, key]) -> logits`.

    `images` are floats in [0, 1] of shape (N, 28, 28, 1) in the run's dtype; logits are (N, 10).
    During training `apply` gets a fresh PRNG `key` each step (for dropout, say) if it takes a
    parameter named `key`; at evaluation it gets `key=None`.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]


def takes_key(apply: Callable) -> bool:
    """Whether `apply` has a parameter named `key`."""
    try:
        return "key" in inspect.signature(apply).parameters
    except (TypeError, ValueError):  # no signature to read: call it without one
        return False


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: each value zeroed with probability `rate`, the rest scaled by
    1 / (1 - rate); `x` unchanged at evaluation (`key` None) or at rate 0."""
    if key is None or not is_on(rate):
        return x
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)


def mlp(config: Config) -> Model:
    """The seed notebook's MLP: `config.layer_sizes`, `sigma`, `activation` and `init`; in
    training, `input_dropout` on the pixels and `dropout` on each hidden layer's output.

    With `init="numpy"` the weights come from `RandomState(s)`, `s` the seed the harness made
    the key from (`jax.random.key(seed)`), in the notebook's order.
    """
    dtype = jnp.dtype(config.dtype)

    def init(key: jax.Array) -> Params:
        if config.init != "numpy":
            return init_params(key, config.layer_sizes, config.sigma, method=config.init, dtype=dtype)
        # NumPy draws on the host, so that shapes can still be traced (jax.eval_shape, vmap).
        def draw(seed):
            draws = numpy_draws(int(seed), config.layer_sizes, config.sigma)
            return [(W.astype(dtype), b.astype(dtype)) for W, b in draws]

        sizes = config.layer_sizes
        shapes = [(jax.ShapeDtypeStruct((m, n), dtype), jax.ShapeDtypeStruct((n,), dtype))
                  for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
        return jax.pure_callback(draw, shapes, jax.random.key_data(key)[-1], vmap_method="sequential")

    def apply(params: Params, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        def drop(site: int, x: jax.Array) -> jax.Array:
            return dropout(x, config.input_dropout if site == 0 else config.dropout, jax.random.fold_in(key, site))

        training = key is not None and (is_on(config.dropout) or is_on(config.input_dropout))
        return logits(params, images.reshape(images.shape[0], -1), config.activation,
                                    drop if training else None)

    return Model(init, apply)


def cnn(config: Config) -> Model:
    """A CNN of `config.cnn_channels` convolutions (`cnn_kernels`, `cnn_padding`), each followed by
    relu and 2x2 pooling (`cnn_pooling`; each layer given to XLA in `cnn_form`), then a dense relu
    layer of `cnn_dense` units and a dense output layer. The defaults are the CNN of Flax's MNIST
    example: conv 32 3x3 SAME, relu, 2x2 average pool, conv 64 3x3 SAME, relu, 2x2 average pool,
    dense 256, relu, dense 10. Kernels are LeCun-normal and biases zero, as Flax initializes them.
    In training, `input_dropout` drops pixels and `dropout` the dense hidden layer's units
    (dropping conv features helps less)."""
    dtype = jnp.dtype(config.dtype)
    channels = (1, *config.cnn_channels)
    side = cnn_feature_side(config)
    shapes = {f"conv{i}": (k, k, channels[i], channels[i + 1]) for i, k in enumerate(config.cnn_kernels)}
    shapes |= {"dense0": (side * side * channels[-1], config.cnn_dense), "dense1": (config.cnn_dense, 10)}

    def init(key: jax.Array) -> dict:
        keys = jax.random.split(key, len(shapes))
        lecun = jax.nn.initializers.lecun_normal()
        return {name: {"w": lecun(k, shape, dtype), "b": jnp.zeros(shape[-1], dtype)}
                for k, (name, shape) in zip(keys, shapes.items(), strict=True)}

    def apply(params: dict, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        input_key, hidden_key = (None, None) if key is None else (jax.random.fold_in(key, site) for site in (0, 1))
        x = dropout(images, config.input_dropout, input_key)
        for i in range(len(config.cnn_kernels)):
            layer = params[f"conv{i}"]
            x = conv.conv_relu_pool(x, layer["w"], layer["b"], config.cnn_padding, config.cnn_pooling,
                                    config.cnn_form)
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["dense0"]["w"] + params["dense0"]["b"])
        return dropout(x, config.dropout, hidden_key) @ params["dense1"]["w"] + params["dense1"]["b"]

    return Model(init, apply)


BUILT_IN = {"mlp": mlp, "cnn": cnn}


def make_model(config: Config) -> Model:
    """The model `config.model` names: built in, or `factory(config)` from an import path."""
    if config.model in BUILT_IN:
        return BUILT_IN[config.model](config)
    if config.model.startswith(OBJECT_PREFIX):
        raise ConfigError(f"model {config.model!r} was a Python object: pass the same object again "
                          "(train(config, model=...)); the command line cannot rebuild it")
    model = call_factory(config.model, config, "model")
    if not isinstance(model, Model):
        raise ConfigError(f"model {config.model!r}: the factory returned {type(model).__name__}, "
                          "not mnist_jax.Model(init, apply)")
    return model
