"""A small CNN with BatchNorm and dropout in each framework, written as its users write it (the
framework's own convolution, its own BatchNorm and Dropout), and the factories that adapt each
for `--model` (`tests.framework_models:nnx_cnn`, `linen_cnn`, `equinox_cnn`)."""

import equinox as eqx
import flax.linen as nn
import jax
from flax import nnx

from mnist_jax.models import from_equinox, from_linen, from_nnx

CHANNELS, RATE = 4, 0.2


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, CHANNELS, kernel_size=(3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(CHANNELS, rngs=rngs)
        self.dropout = nnx.Dropout(RATE, rngs=rngs)
        self.out = nnx.Linear(7 * 7 * CHANNELS, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.norm(self.conv(x)))
        x = nnx.avg_pool(x, window_shape=(4, 4), strides=(4, 4))
        return self.out(self.dropout(x.reshape(x.shape[0], -1)))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(CHANNELS, kernel_size=(3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.avg_pool(x, window_shape=(4, 4), strides=(4, 4))
        x = nn.Dropout(RATE, deterministic=not train)(x.reshape(x.shape[0], -1))
        return nn.Dense(10)(x)


class EquinoxCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm
    dropout: eqx.nn.Dropout
    out: eqx.nn.Linear

    def __init__(self, key):
        conv_key, out_key = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, CHANNELS, kernel_size=3, padding=1, key=conv_key)
        self.norm = eqx.nn.BatchNorm(CHANNELS, axis_name="batch", mode="batch")
        self.dropout = eqx.nn.Dropout(RATE)
        self.out = eqx.nn.Linear(7 * 7 * CHANNELS, 10, key=out_key)

    def __call__(self, x, state, *, key=None):  # one image, channels first
        x, state = self.norm(self.conv(x), state)
        x = jax.nn.relu(x).reshape(CHANNELS, 7, 4, 7, 4).mean(axis=(2, 4))
        return self.out(self.dropout(x.reshape(-1), key=key)), state


def nnx_cnn(config):
    return from_nnx(NnxCNN)


def linen_cnn(config):
    return from_linen(LinenCNN())


def equinox_cnn(config):
    return from_equinox(EquinoxCNN)
