"""The pure train and eval steps (`make_steps`): one step against plain Optax, Adam's first step,
padding, label smoothing and the loss's reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, loss, predict
from mnist_jax.models.mlp import logits
from mnist_jax.optimizers import make_optimizer
from mnist_jax.steps import Batch, init_state, make_steps, normalise
from tests.helpers import assert_same_updates, masked_batch


def _batch(images, labels, size):
    pad = size - len(labels)
    return Batch(
        np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))),
        np.pad(labels, (0, pad)),
        np.arange(size) < len(labels),
    )


def test_padded_step_equals_a_step_on_the_real_rows(tiny_config, synthetic):
    config = tiny_config
    images, labels = (
        synthetic["train"][0][:20, ..., None],
        synthetic["train"][1][:20].astype(np.int32),
    )
    state = init_state(config)
    optimizer = make_optimizer(config)
    new_state, batch_loss = jax.jit(make_steps(config).train_step)(
        state, _batch(images, labels, 32)
    )
    # Independently: Adam on the 20-example batch, no padding.
    inputs = images.reshape(20, -1).astype(np.float32) / 255
    grads = jax.grad(loss)(state.params, inputs, labels)
    updates, _ = optimizer.update(grads, state.opt_state, state.params)
    expected = optax.apply_updates(state.params, updates)
    np.testing.assert_allclose(batch_loss, loss(state.params, inputs, labels), rtol=1e-5)
    for got, want in zip(
        jax.tree.leaves(new_state.params), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.device
def test_first_step_is_adam_as_the_seed_ran_it(tiny_config, synthetic):
    config = tiny_config
    images, labels = (
        synthetic["train"][0][:32, ..., None],
        synthetic["train"][1][:32].astype(np.int32),
    )
    state = init_state(config)
    g = jax.grad(loss)(state.params, normalise(images, jnp.float32), labels)
    new_state, _ = jax.jit(make_steps(config).train_step)(state, _batch(images, labels, 32))
    # autograd's adam, first step: m_hat = g, v_hat = g**2.
    lr, eps = config.learning_rate, config.eps
    for p, grad, new in zip(
        jax.tree.leaves(state.params),
        jax.tree.leaves(g),
        jax.tree.leaves(new_state.params),
        strict=True,
    ):
        expected = np.asarray(p) - lr * np.asarray(grad) / (np.abs(np.asarray(grad)) + eps)
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)


def test_sgd_by_name_takes_a_plain_gradient_step():
    config = Config(layer_sizes=(784, 8, 10), optimizer="sgd", learning_rate=0.01)
    state = init_state(config)
    rng = np.random.default_rng(1)
    batch = Batch(
        jnp.asarray(rng.integers(0, 256, (4, 28, 28, 1)), jnp.uint8),
        jnp.asarray([1, 2, 3, 4]),
        jnp.ones(4, bool),
    )
    new_state, _ = make_steps(config).train_step(state, batch)
    inputs = batch.images.reshape(4, -1).astype(jnp.float32) / 255
    grads = jax.grad(
        lambda p: -jnp.sum(jnp.take_along_axis(predict(p, inputs), batch.labels[:, None], 1))
    )(state.params)
    for new, old, grad in zip(
        jax.tree.leaves(new_state.params),
        jax.tree.leaves(state.params),
        jax.tree.leaves(grads),
        strict=True,
    ):
        np.testing.assert_allclose(new, old - 0.01 * grad, rtol=1e-5, atol=1e-7)


def test_label_smoothing_is_optax_cross_entropy_against_smoothed_labels():
    config = Config(
        layer_sizes=(784, 32, 10), label_smoothing=0.2, optimizer="sgd", learning_rate=0.01
    )
    steps, batch = make_steps(config), masked_batch()
    state = steps.init(0)

    def independent(params):
        scores = logits(params, batch.images.reshape(12, -1).astype(jnp.float32) / 255)
        targets = optax.smooth_labels(jax.nn.one_hot(batch.labels, 10), 0.2)
        return jnp.sum(jnp.where(batch.mask, optax.softmax_cross_entropy(scores, targets), 0))

    new_state, value = jax.jit(steps.train_step)(state, batch)
    assert float(value) == pytest.approx(float(independent(state.params)), rel=1e-5)
    # linear in the gradient: rounding cannot flip a step
    optimizer = optax.sgd(config.learning_rate)
    updates, _ = optimizer.update(
        jax.grad(independent)(state.params), optimizer.init(state.params)
    )
    assert_same_updates(new_state.params, optax.apply_updates(state.params, updates), exact=False)


def test_mean_and_sum_gradients_differ_by_the_real_row_count(synthetic):
    images, labels = (
        synthetic["train"][0][:20, ..., None],
        synthetic["train"][1][:20].astype(np.int32),
    )
    batch = Batch(
        np.pad(images, ((0, 12), (0, 0), (0, 0), (0, 0))),
        np.pad(labels, (0, 12)),
        np.arange(32) < 20,
    )
    with jax.enable_x64(True):
        config = Config(layer_sizes=(784, 16, 10), dtype="float64")
        sgd = optax.sgd(1.0)  # the update is minus the gradient
        start = make_steps(config, optimizer=sgd).init(0)
        updates = {}
        for reduction in ("sum", "mean"):
            new, _ = make_steps(
                config.replace(loss_reduction=reduction), optimizer=sgd
            ).train_step(start, batch)
            updates[reduction] = jax.tree.map(
                lambda a, b: np.asarray(b - a), start.params, new.params
            )
    for total, mean in zip(
        jax.tree.leaves(updates["sum"]), jax.tree.leaves(updates["mean"]), strict=True
    ):
        np.testing.assert_allclose(total, 20 * mean, rtol=1e-10, atol=1e-14)


def test_the_l2_penalty_is_coupled_through_the_optimizer_and_spares_the_biases():
    """With SGD the update is minus the rate times the gradient of the objective: the mean NLL plus
    `l2 / 2` times the weights' squared norm, the biases' gradient the NLL's alone."""
    config = Config(
        layer_sizes=(784, 16, 10),
        optimizer="sgd",
        learning_rate=0.1,
        loss_reduction="mean",
        l2=0.5,
    )
    steps, batch = make_steps(config), masked_batch()
    state = steps.init(0)
    inputs = batch.images.reshape(12, -1).astype(jnp.float32) / 255

    def objective(params):
        nll = (
            -jnp.sum(
                jnp.where(
                    batch.mask,
                    jnp.take_along_axis(predict(params, inputs), batch.labels[:, None], axis=1)[
                        :, 0
                    ],
                    0,
                )
            )
            / batch.mask.sum()
        )
        return nll + 0.5 / 2 * sum(jnp.sum(W**2) for W, _ in params)

    new_state, value = jax.jit(steps.train_step)(state, batch)
    assert float(value) == pytest.approx(float(objective(state.params)), rel=1e-6)
    expected = jax.tree.map(
        lambda p, g: p - 0.1 * g, state.params, jax.grad(objective)(state.params)
    )
    assert_same_updates(new_state.params, expected, exact=False)
    plain = jax.jit(make_steps(config.replace(l2=0.0)).train_step)(state, batch)[0]
    for (W, b), (W_plain, b_plain) in zip(new_state.params, plain.params, strict=True):
        np.testing.assert_allclose(b, b_plain, rtol=1e-6)  # biases spared
        assert not np.allclose(W, W_plain)
