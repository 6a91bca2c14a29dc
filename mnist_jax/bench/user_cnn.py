"""The `cnn` preset's network as a researcher writes it in plain JAX, with
`lax.conv_general_dilated` and `lax.reduce_window`: the benchmark trains it through `--model`
(`mnist_jax.bench.user_cnn:user_cnn`), beside the built-in preset, to time what the harness makes
of a model it did not write."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from mnist_jax.config import Config
from mnist_jax.models import Model

IMPORT_PATH = "mnist_jax.bench.user_cnn:user_cnn"  # as --model takes it
SHAPES = {
    "conv0": (3, 3, 1, 32),
    "conv1": (3, 3, 32, 64),
    "dense0": (7 * 7 * 64, 256),
    "dense1": (256, 10),
}


def user_cnn(config: Config) -> Model:
    """conv 32 3x3 SAME, relu, 2x2 average pool, conv 64 3x3 SAME, relu, 2x2 average pool,
    dense 256, relu, dense 10; kernels LeCun-normal and biases zero, as Flax's."""
    dtype = jnp.dtype(config.dtype)

    def init(key):
        lecun = jax.nn.initializers.lecun_normal()
        keys = jax.random.split(key, len(SHAPES))
        return {
            name: (lecun(k, shape, dtype), jnp.zeros(shape[-1], dtype))
            for k, (name, shape) in zip(keys, SHAPES.items(), strict=True)
        }

    def apply(params, images):
        x = images
        for name in ("conv0", "conv1"):
            w, b = params[name]
            x = lax.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = jax.nn.relu(x + b)
            x = lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
        w, b = params["dense0"]
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ w + b)
        w, b = params["dense1"]
        return x @ w + b

    return Model(init, apply)
