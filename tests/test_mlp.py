"""The seed notebook's MLP as plain functions (`mnist_jax.models.mlp`), against independent NumPy
computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import accuracy, init_params, loss, predict

SIZES = (784, 20, 15, 10)


def numpy_predict(params, x):
    """The seed notebook's predict, in plain NumPy."""
    for W, b in params:
        y_hat = x @ np.asarray(W) + np.asarray(b)
        x = np.tanh(y_hat)
    m = y_hat.max(axis=1, keepdims=True)
    return y_hat - (m + np.log(np.exp(y_hat - m).sum(axis=1, keepdims=True)))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.random((7, 784)), rng.integers(0, 10, 7)


@pytest.fixture
def params64():
    with jax.enable_x64(True):
        yield init_params(3, SIZES, 0.1, method="numpy", dtype=jnp.float64)


def test_numpy_init_follows_the_seed_notebook_order():
    params = init_params(42, (784, 200, 100, 10), 0.1, method="numpy", dtype=jnp.float32)
    rng = np.random.RandomState(42)
    for W, b in params:
        np.testing.assert_allclose(W, 0.1 * rng.randn(*W.shape), rtol=1e-6)
        np.testing.assert_allclose(b, 0.1 * rng.randn(*b.shape), rtol=1e-6)
    assert [W.shape for W, _ in params] == [(784, 200), (200, 100), (100, 10)]


def test_jax_init_is_deterministic_with_the_right_scale():
    a, b = init_params(0, SIZES, 0.5), init_params(0, SIZES, 0.5)
    c = init_params(1, SIZES, 0.5)
    assert all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert not np.array_equal(a[0][0], c[0][0])
    assert a[0][0].dtype == jnp.float32 and a[0][0].shape == (784, 20)
    assert abs(float(jnp.std(a[0][0])) - 0.5) < 0.02


def test_predict_matches_numpy(params64, batch):
    x, _ = batch
    with jax.enable_x64(True):
        out = predict(params64, jnp.asarray(x))
    assert out.shape == (7, 10) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, numpy_predict(params64, x), rtol=1e-12)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-12)


def test_loss_is_the_seeds_summed_nll(params64, batch):
    x, y = batch
    one_hot = np.eye(10)[y]
    expected = -np.sum(one_hot * numpy_predict(params64, x))
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            loss(params64, jnp.asarray(x), jnp.asarray(y)), expected, rtol=1e-12
        )
        mask = jnp.arange(7) < 4
        masked = loss(params64, jnp.asarray(x), jnp.asarray(y), mask)
    np.testing.assert_allclose(
        masked, -np.sum(one_hot[:4] * numpy_predict(params64, x[:4])), rtol=1e-12
    )


def test_gradient_matches_finite_differences(params64, batch):
    x, y = batch
    with jax.enable_x64(True):
        f = lambda p: loss(p, jnp.asarray(x), jnp.asarray(y))  # noqa: E731
        grads = jax.grad(f)(params64)
        rng = np.random.default_rng(1)
        h = 1e-6
        for layer in range(len(SIZES) - 1):
            for which in (0, 1):
                flat_index = rng.integers(params64[layer][which].size)
                index = np.unravel_index(flat_index, params64[layer][which].shape)

                def shifted(delta, layer=layer, which=which, index=index):
                    p = [list(pair) for pair in params64]
                    p[layer][which] = p[layer][which].at[index].add(delta)
                    return f([tuple(pair) for pair in p])

                numeric = (shifted(h) - shifted(-h)) / (2 * h)
                np.testing.assert_allclose(
                    grads[layer][which][index], numeric, rtol=1e-5, atol=1e-8
                )


def test_accuracy_matches_numpy(params64, batch):
    x, _ = batch
    predicted = numpy_predict(params64, x).argmax(axis=1)
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % 10
    with jax.enable_x64(True):
        assert float(accuracy(params64, jnp.asarray(x), jnp.asarray(labels))) == pytest.approx(
            4 / 7
        )


def test_relu_predict_matches_numpy():
    params = init_params(0, (784, 8, 10))
    x = np.random.default_rng(0).random((5, 784), np.float32)
    (W0, b0), (W1, b1) = [tuple(map(np.asarray, layer)) for layer in params]
    logits = np.maximum(x @ W0 + b0, 0) @ W1 + b1
    expected = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(
        predict(params, jnp.asarray(x), "relu"), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "method, std",
    [("glorot", lambda m, n: np.sqrt(2 / (m + n))), ("he", lambda m, n: np.sqrt(2 / m))],
)
def test_fan_scaled_inits_have_their_scale_and_zero_biases(method, std):
    sizes = (784, 1000, 1000, 10)
    params = init_params(0, sizes, method=method)
    for (W, b), m, n in zip(params, sizes[:-1], sizes[1:], strict=True):
        assert (
            abs(float(jnp.std(W)) - std(m, n)) < 0.05 * std(m, n) and float(jnp.abs(b).max()) == 0
        )
    if method == "glorot":  # uniform within sqrt(6 / (fan_in + fan_out))
        assert all(
            float(jnp.abs(W).max()) <= np.sqrt(6 / (m + n))
            for (W, _), m, n in zip(params, sizes[:-1], sizes[1:], strict=True)
        )
    again = init_params(0, sizes, method=method)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True)
    )
