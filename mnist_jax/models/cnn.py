"""The built-in CNN, shaped by the `cnn_*` settings; Flax's MNIST example's by default."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mnist_jax.config import Config, Hyperparameters, cnn_feature_side, numbers
from mnist_jax.errors import ConfigError
from mnist_jax.models import conv
from mnist_jax.models.interface import Model
from mnist_jax.models.layers import dropout


def check_cnn_form(config: Config) -> None:
    """Raises ConfigError unless `config.cnn_form` is one of `conv.LAYER_FORMS`."""
    if config.cnn_form not in conv.LAYER_FORMS:
        raise ConfigError(
            f"cnn_form must be one of {', '.join(conv.LAYER_FORMS)}, got {config.cnn_form!r}"
        )


def cnn(config: Config, hyperparameters: Hyperparameters | None = None) -> Model:
    """A CNN of `config.cnn_channels` convolutions (`cnn_kernels`, `cnn_padding`), each followed
    by relu and 2x2 pooling (`cnn_pooling`; each layer given to XLA in `cnn_form`, one of
    `conv.LAYER_FORMS`), then a dense relu layer of `cnn_dense` units and a dense output layer. The
    defaults are the CNN of Flax's MNIST example: conv 32 3x3 SAME, relu, 2x2 average pool,
    conv 64 3x3 SAME, relu, 2x2 average pool, dense 256, relu, dense 10. Kernels are
    LeCun-normal and biases zero, as Flax initializes them. In training, `input_dropout` drops
    pixels and `dropout` the dense hidden layer's units (dropping conv features helps less), at
    a grid cell's traced rates if `hyperparameters` gives them."""
    check_cnn_form(config)
    dtype = jnp.dtype(config.dtype)
    rates = numbers(config, hyperparameters)
    channels = (1, *config.cnn_channels)
    side = cnn_feature_side(config)
    shapes = {
        f"conv{i}": (k, k, channels[i], channels[i + 1]) for i, k in enumerate(config.cnn_kernels)
    }
    shapes |= {
        "dense0": (side * side * channels[-1], config.cnn_dense),
        "dense1": (config.cnn_dense, 10),
    }

    def init(key: jax.Array) -> dict:
        keys = jax.random.split(key, len(shapes))
        lecun = jax.nn.initializers.lecun_normal()
        return {
            name: {"w": lecun(k, shape, dtype), "b": jnp.zeros(shape[-1], dtype)}
            for k, (name, shape) in zip(keys, shapes.items(), strict=True)
        }

    def apply(params: dict, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        input_key, hidden_key = (
            (None, None) if key is None else (jax.random.fold_in(key, site) for site in (0, 1))
        )
        x = dropout(images, rates["input_dropout"], input_key)
        for i in range(len(config.cnn_kernels)):
            layer = params[f"conv{i}"]
            x = conv.conv_relu_pool(
                x, layer["w"], layer["b"], config.cnn_padding, config.cnn_pooling, config.cnn_form
            )
        dense0, dense1 = params["dense0"], params["dense1"]
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ dense0["w"] + dense0["b"])
        return dropout(x, rates["dropout"], hidden_key) @ dense1["w"] + dense1["b"]

    return Model(init, apply)
