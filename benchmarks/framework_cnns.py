"""The `cnn` preset's network as researchers write it with Flax NNX, Flax Linen and Equinox, each
with its framework's own layers (`Conv`, `relu`, average pooling, `Linear`/`Dense`), its factory
loadable by import path: `--model benchmarks.framework_cnns:nnx_cnn` (`linen_cnn`,
`equinox_cnn`). The plain-JAX one is `mnist_jax.bench.user_cnn:user_cnn`.
"""

import equinox as eqx
import flax.linen as nn
import jax
from flax import nnx

from mnist_jax.models import from_equinox, from_linen, from_nnx


class NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv0 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv1 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.dense0 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
        self.dense1 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.conv0(x)), window_shape=(2, 2), strides=(2, 2))
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), window_shape=(2, 2), strides=(2, 2))
        return self.dense1(nnx.relu(self.dense0(x.reshape(x.shape[0], -1))))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.avg_pool(nn.relu(nn.Conv(32, kernel_size=(3, 3))(x)), (2, 2), strides=(2, 2))
        x = nn.avg_pool(nn.relu(nn.Conv(64, kernel_size=(3, 3))(x)), (2, 2), strides=(2, 2))
        return nn.Dense(10)(nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1))))


class EquinoxCNN(eqx.Module):
    conv0: eqx.nn.Conv2d
    conv1: eqx.nn.Conv2d
    pool: eqx.nn.AvgPool2d
    dense0: eqx.nn.Linear
    dense1: eqx.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 4)
        self.conv0 = eqx.nn.Conv2d(1, 32, kernel_size=3, padding=1, key=keys[0])
        self.conv1 = eqx.nn.Conv2d(32, 64, kernel_size=3, padding=1, key=keys[1])
        self.pool = eqx.nn.AvgPool2d(kernel_size=2, stride=2)
        self.dense0 = eqx.nn.Linear(7 * 7 * 64, 256, key=keys[2])
        self.dense1 = eqx.nn.Linear(256, 10, key=keys[3])

    def __call__(self, x, *, key=None):  # one image, channels first
        x = self.pool(jax.nn.relu(self.conv0(x)))
        x = self.pool(jax.nn.relu(self.conv1(x)))
        return self.dense1(jax.nn.relu(self.dense0(x.reshape(-1))))


def nnx_cnn(config):
    return from_nnx(NnxCNN)


def linen_cnn(config):
    return from_linen(LinenCNN())


def equinox_cnn(config):
    return from_equinox(EquinoxCNN)
