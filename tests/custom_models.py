"""Models and optimizers that the tests load by import path (`tests.custom_models:NAME`), as a
researcher's own module would be loaded: good ones, and every way of getting one wrong."""

import os
import time

import jax
import jax.numpy as jnp
import optax

from mnist_jax import Model


def tiny_cnn(config):
    """Conv 4 3x3, relu, 4x4 average pool, dropout 0.2 while training, dense 10."""
    dtype = jnp.dtype(config.dtype)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "conv": {
                "w": 0.3 * jax.random.normal(k1, (3, 3, 1, 4), dtype),
                "b": jnp.zeros(4, dtype),
            },
            "out": {
                "w": 0.1 * jax.random.normal(k2, (7 * 7 * 4, 10), dtype),
                "b": jnp.zeros(10, dtype),
            },
        }

    def apply(params, images, key=None):
        x = (
            jax.lax.conv_general_dilated(
                images,
                params["conv"]["w"],
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            + params["conv"]["b"]
        )
        x = (
            jax.nn.relu(x)
            .reshape(x.shape[0], 7, 4, 7, 4, 4)
            .mean(axis=(2, 4))
            .reshape(x.shape[0], -1)
        )
        if key is not None:
            keep = jax.random.bernoulli(key, 0.8, x.shape)
            x = jnp.where(keep, x / 0.8, 0)
        return x @ params["out"]["w"] + params["out"]["b"]

    return Model(init, apply)


def slow_cnn(config):
    """`tiny_cnn` made slow on purpose: each training step sleeps $SLOW_STEP_SECONDS and each
    evaluation batch $SLOW_EVAL_SECONDS, read as the program runs, so that the programs compiled
    are the same whatever the sleeps (none where unset)."""
    model = tiny_cnn(config)

    def apply(params, images, key=None):
        variable = "SLOW_EVAL_SECONDS" if key is None else "SLOW_STEP_SECONDS"
        jax.debug.callback(lambda: time.sleep(float(os.environ.get(variable, "0"))))
        return model.apply(params, images, key)

    return Model(model.init, apply)


def linear(config):
    """A linear classifier, no key: `apply(params, images)`."""
    dtype = jnp.dtype(config.dtype)
    return Model(
        lambda key: {"w": jnp.zeros((784, 10), dtype), "b": jnp.zeros(10, dtype)},
        lambda params, images: images.reshape(images.shape[0], -1) @ params["w"] + params["b"],
    )


def nesterov(config):
    """SGD with Nesterov momentum at the config's learning rate."""
    return optax.sgd(config.learning_rate, momentum=0.9, nesterov=True)


# Wrong in one way each.


def raises(config):
    raise RuntimeError("no GPU budget left")


def not_a_model(config):
    return "a string"


def wrong_shape(config):
    return Model(
        lambda key: {"w": jnp.zeros((784, 5))},
        lambda params, images: images.reshape(-1, 784) @ params["w"],
    )


def init_raises(config):
    def init(key):
        raise ValueError("bad width")

    return Model(init, lambda params, images: images)


def not_an_optimizer(config):
    return 42


NOT_CALLABLE = 3


NAN_STEP = 15  # the second epoch's fifth step in the fault tests' runs (10 batches an epoch)


def adam_nan_at_step(config):
    """Adam whose update number NAN_STEP is NaN, so the loss turns non-finite at a known step."""
    inner = optax.adam(config.learning_rate)

    def init(params):
        return inner.init(params), jnp.zeros((), jnp.int32)

    def update(updates, state, params=None):
        inner_state, count = state
        updates, inner_state = inner.update(updates, inner_state, params)
        count = count + 1
        return jax.tree.map(lambda u: jnp.where(count == NAN_STEP, jnp.nan, u), updates), (
            inner_state,
            count,
        )

    return optax.GradientTransformation(init, update)


def key_noise(config):
    """A linear classifier whose training logits get unit normal noise drawn from the step's key
    (at the batch's full, padded shape), so what it learns depends on every key the harness hands
    it; at evaluation (no key) it adds none."""
    dtype = jnp.dtype(config.dtype)

    def apply(params, images, key=None):
        logits = images.reshape(images.shape[0], -1) @ params["w"] + params["b"]
        return (
            logits if key is None else logits + jax.random.normal(key, logits.shape, logits.dtype)
        )

    return Model(lambda key: {"w": jnp.zeros((784, 10), dtype), "b": jnp.zeros(10, dtype)}, apply)
