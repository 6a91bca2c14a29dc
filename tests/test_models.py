"""The built-in models behind the `Model` interface: the CNN against NumPy, dropout in training only."""


import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import Config, models
from mnist_jax.mlp import logits
from mnist_jax.steps import epoch_key, make_steps
from tests.helpers import masked_batch


def numpy_cnn(params, images):
    """Flax's MNIST CNN written out in NumPy: explicit 3x3 windows, pooling by reshaping."""
    def conv(x, w, b):
        n, h, wd, _ = x.shape
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros((n, h, wd, w.shape[-1]))
        for dy in range(3):
            for dx in range(3):
                out += padded[:, dy:dy + h, dx:dx + wd, :] @ w[dy, dx]
        return out + b

    def pool(x):
        n, h, wd, c = x.shape
        return x.reshape(n, h // 2, 2, wd // 2, 2, c).mean(axis=(2, 4))

    p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()}
    x = pool(np.maximum(conv(images, p["conv0"]["w"], p["conv0"]["b"]), 0))
    x = pool(np.maximum(conv(x, p["conv1"]["w"], p["conv1"]["b"]), 0))
    x = np.maximum(x.reshape(len(x), -1) @ p["dense0"]["w"] + p["dense0"]["b"], 0)
    return x @ p["dense1"]["w"] + p["dense1"]["b"]


def test_the_cnn_matches_an_independent_numpy_computation():
    with jax.enable_x64(True):
        model = models.cnn(Config(model="cnn", dtype="float64"))
        params = model.init(jax.random.key(3))
        params = jax.tree.map(lambda a: a + 0.05, params)  # non-zero biases too
        images = np.random.default_rng(0).random((3, 28, 28, 1))
        got = np.asarray(model.apply(params, jnp.asarray(images)))
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, numpy_cnn(params, images), rtol=1e-10, atol=1e-12)
    shapes = {name: {k: v.shape for k, v in layer.items()} for name, layer in params.items()}
    assert shapes == {"conv0": {"w": (3, 3, 1, 32), "b": (32,)}, "conv1": {"w": (3, 3, 32, 64), "b": (64,)},
                      "dense0": {"w": (3136, 256), "b": (256,)}, "dense1": {"w": (256, 10), "b": (10,)}}


def test_dropout_scales_the_kept_units_and_is_off_without_a_key():
    x = jnp.ones((1000, 100))
    dropped = np.asarray(models.dropout(x, 0.3, jax.random.key(0)))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.7)}
    assert abs((dropped == 0).mean() - 0.3) < 0.01
    assert models.dropout(x, 0.3, None) is x


def test_mlp_dropout_masks_differ_per_step_and_per_seed_and_are_off_at_evaluation():
    config = Config(layer_sizes=(784, 64, 64, 10), dropout=0.5, input_dropout=0.2)
    model = models.mlp(config)
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    np.testing.assert_array_equal(model.apply(params, images, None), logits(params, images.reshape(12, -1)))
    step_keys = {(seed, step): jax.random.fold_in(epoch_key(seed, 1), step) for seed in (42, 43) for step in (0, 1)}
    outputs = {where: np.asarray(model.apply(params, images, key)) for where, key in step_keys.items()}
    for a in outputs:
        for b in outputs:
            assert (a == b) == np.array_equal(outputs[a], outputs[b]), (a, b)
    np.testing.assert_array_equal(outputs[(42, 0)], model.apply(params, images, step_keys[(42, 0)]))
    state = make_steps(config).init(0)
    step = jax.jit(make_steps(config).train_step)
    batch = masked_batch()
    assert float(step(state, batch, step_keys[(42, 0)])[1]) != float(step(state, batch, step_keys[(42, 1)])[1])


def test_cnn_dropout_is_off_at_evaluation():
    model = models.cnn(Config(model="cnn", dropout=0.5))
    params = model.init(jax.random.key(0))
    images = jnp.asarray(masked_batch().images, jnp.float32) / 255
    plain = models.cnn(Config(model="cnn")).apply(params, images)
    np.testing.assert_array_equal(model.apply(params, images, None), plain)
    assert not np.allclose(model.apply(params, images, jax.random.key(1)), plain)
