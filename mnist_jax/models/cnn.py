"""The built-in CNN, shaped by the `cnn_*` settings; Flax's MNIST example's by default."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from mnist_jax.config import Config, Hyperparameters, cnn_feature_side, numbers, parameter_dtype
from mnist_jax.errors import ConfigError
from mnist_jax.models import conv
from mnist_jax.models.interface import Model
from mnist_jax.models.layers import batch_norm, batchnorm_state, dropout

AUTO = "auto"  # the form chosen for the platform (`layer_form`)


def check_cnn_form(config: Config) -> None:
    """Raises ConfigError unless `config.cnn_form` is one of `conv.LAYER_FORMS` or `auto`."""
    if config.cnn_form not in (*conv.LAYER_FORMS, AUTO):
        raise ConfigError(
            f"cnn_form must be one of {', '.join((*conv.LAYER_FORMS, AUTO))}, got "
            f"{config.cnn_form!r}"
        )


def layer_form(config: Config, platform: str | None = None) -> str:
    """The form the CNN's layers take on `platform` (default: `config.platform`, else JAX's
    default): `config.cnn_form`, or for `auto` XLA's native convolution on a GPU or TPU (cuDNN's
    and the TPU's own kernels) and on a CPU the form the conv-forms benchmark measured fastest
    for the network: `winograd` when every kernel is 3x3, as in `cnn` and `cnn-strong`,
    otherwise `space_to_depth`, as in `speedrun` (see the Performance page)."""
    check_cnn_form(config)
    if config.cnn_form != AUTO:
        return config.cnn_form
    if (platform or config.platform or jax.default_backend()) != "cpu":
        return "native"
    return conv.WINOGRAD if set(config.cnn_kernels) == {3} else conv.SPACE_TO_DEPTH


def as_run(config: Config, platform: str | None = None) -> Config:
    """`config` as a run on `platform` records it: the built-in CNN's `auto` form replaced by
    the form it takes there (`layer_form`). Other models have no layers of the package's and
    keep the setting as given."""
    if config.model != "cnn" or config.cnn_form != AUTO:
        return config
    return config.replace(cnn_form=layer_form(config, platform))


def cnn(config: Config, hyperparameters: Hyperparameters | None = None) -> Model:
    """A CNN of `config.cnn_channels` convolutions (`cnn_kernels`, `cnn_padding`), each followed
    by relu and 2x2 pooling (`cnn_pooling`; each layer given to XLA in `layer_form`'s form), then
    a dense relu layer of `cnn_dense` units and a dense output layer. The
    defaults are the CNN of Flax's MNIST example: conv 32 3x3 SAME, relu, 2x2 average pool,
    conv 64 3x3 SAME, relu, 2x2 average pool, dense 256, relu, dense 10. Kernels are
    LeCun-normal and biases zero, as Flax initializes them. In training, `input_dropout` drops
    pixels and `dropout` the dense hidden layer's units (dropping conv features helps less), at
    a grid cell's traced rates if `hyperparameters` gives them.

    With `cnn_batchnorm`, BatchNorm (`layers.batch_norm`, its scale starting at one) comes
    between each hidden layer's matmul or convolution and its bias, and the model is stateful:
    its state is each layer's running statistics, which evaluation uses."""
    form = layer_form(config)
    dtype = jnp.dtype(parameter_dtype(config))
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
    normalized = list(shapes)[:-1] if config.cnn_batchnorm else []

    def init_params(key: jax.Array) -> dict:
        keys = jax.random.split(key, len(shapes))
        lecun = jax.nn.initializers.lecun_normal()
        params = {
            name: {"w": lecun(k, shape, dtype), "b": jnp.zeros(shape[-1], dtype)}
            for k, (name, shape) in zip(keys, shapes.items(), strict=True)
        }
        for name in normalized:
            params[name]["scale"] = jnp.ones(shapes[name][-1], dtype)
        return params

    def forward(params, state, images, key, training):
        input_key, hidden_key = (
            (None, None) if key is None else (jax.random.fold_in(key, site) for site in (0, 1))
        )
        new_state = {}

        def batch_normalize(name: str, y: jax.Array) -> jax.Array:
            y, new_state[name] = batch_norm(y, params[name]["scale"], state[name], training)
            return y

        x = dropout(images, rates["input_dropout"], input_key)
        for i in range(len(config.cnn_kernels)):
            name = f"conv{i}"
            x = conv.conv_relu_pool(
                x,
                params[name]["w"],
                params[name]["b"],
                config.cnn_padding,
                config.cnn_pooling,
                form,
                partial(batch_normalize, name) if normalized else None,
            )
        dense0, dense1 = params["dense0"], params["dense1"]
        x = x.reshape(x.shape[0], -1) @ dense0["w"]
        x = jax.nn.relu((batch_normalize("dense0", x) if normalized else x) + dense0["b"])
        logits = dropout(x, rates["dropout"], hidden_key) @ dense1["w"] + dense1["b"]
        return logits, new_state

    if not normalized:

        def apply(params: dict, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
            return forward(params, {}, images, key, key is not None)[0]

        return Model(init_params, apply)

    def init(key: jax.Array) -> tuple[dict, dict]:
        state = {name: batchnorm_state(shapes[name][-1], dtype) for name in normalized}
        return init_params(key), state

    def apply_stateful(
        params: dict,
        state: dict,
        images: jax.Array,
        *,
        key: jax.Array | None = None,
        training: bool = False,
    ) -> tuple[jax.Array, dict]:
        return forward(params, state, images, key, training)

    return Model(init, apply_stateful, stateful=True)
