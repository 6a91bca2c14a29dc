"""A recipe's optimizer: schedules, weight decay and clipping update exactly as Optax's own
building blocks (or a closed form) would."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, init_params, train
from mnist_jax.optimizers import learning_rate_schedule, make_optimizer
from tests.helpers import assert_same_updates

TRAIN_SIZE, BATCH, EPOCHS = 50, 10, 2  # 5 steps an epoch, 10 in the run


def schedule_config(**changes) -> Config:
    return Config(batch_size=BATCH, num_epochs=EPOCHS, learning_rate=0.01, **changes)


def closed_form(name: str, peak: float, total: int, warmup: int):
    """Each schedule written out by hand."""

    def cosine(t, length):
        return 0.5 * (1 + math.cos(math.pi * min(t, length) / length))

    def onecycle(t):
        start, end, boundary = peak / 25, peak / 25 / 1e4, int(warmup / total * total)
        if t <= boundary:
            return peak + (start - peak) * cosine(t, boundary)
        return end + (peak - end) * cosine(t - boundary, total - boundary)

    return {
        "constant": lambda t: peak,
        "cosine": lambda t: peak * cosine(t, total),
        "linear": lambda t: peak * (1 - min(t, total) / total),
        "warmup_cosine": lambda t: (
            peak * t / warmup if t < warmup else peak * cosine(t - warmup, total - warmup)
        ),
        "onecycle": onecycle,
    }[name]


@pytest.mark.parametrize("name", ["constant", "cosine", "warmup_cosine", "linear", "onecycle"])
def test_each_schedule_is_its_closed_form_over_the_runs_steps(name):
    warmup_epochs = 0.4 if name in ("warmup_cosine", "onecycle") else 0.0
    config = schedule_config(schedule=name, warmup_epochs=warmup_epochs)
    schedule = learning_rate_schedule(config, TRAIN_SIZE)
    expected = closed_form(name, 0.01, EPOCHS * TRAIN_SIZE // BATCH, 2)
    for t in range(EPOCHS * TRAIN_SIZE // BATCH + 3):
        got = schedule(t) if callable(schedule) else schedule
        assert float(got) == pytest.approx(expected(t), rel=1e-5, abs=1e-9), t


def run_updates(optimizer: optax.GradientTransformation, steps: int = 12):
    """`steps` updates of MLP parameters by fixed random gradients; the parameters after each."""
    params = init_params(0, (784, 8, 10))
    state, history = optimizer.init(params), []
    for step in range(steps):
        grads = init_params(100 + step, (784, 8, 10), sigma=1.0)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history


def biases_spared(params):
    return jax.tree.map(lambda leaf: leaf.ndim >= 2, params)


def hand_schedule(name, warmup=2):
    formula = closed_form(name, 0.01, EPOCHS * TRAIN_SIZE // BATCH, warmup)
    return lambda count: jnp.asarray([formula(t) for t in range(40)], jnp.float32)[count]


HAND_BUILT = {
    "schedule": (
        dict(schedule="cosine"),
        lambda: optax.chain(
            optax.scale_by_adam(), optax.scale_by_learning_rate(hand_schedule("cosine"))
        ),
        False,
    ),
    "weight_decay": (
        dict(weight_decay=0.1),
        lambda: optax.chain(
            optax.scale_by_adam(),
            optax.add_decayed_weights(0.1, biases_spared),
            optax.scale_by_learning_rate(0.01),
        ),
        True,
    ),
    "weight_decay_sgd_nesterov": (
        dict(weight_decay=0.1, optimizer="sgd", momentum=0.9, nesterov=True),
        lambda: optax.chain(
            optax.trace(0.9, nesterov=True),
            optax.add_decayed_weights(0.1, biases_spared),
            optax.scale_by_learning_rate(0.01),
        ),
        True,
    ),
    "clip_norm": (
        dict(clip_norm=0.5),
        lambda: optax.chain(
            optax.clip_by_global_norm(0.5),
            optax.scale_by_adam(),
            optax.scale_by_learning_rate(0.01),
        ),
        True,
    ),
    "everything": (
        dict(clip_norm=0.5, weight_decay=0.1, schedule="warmup_cosine", warmup_epochs=0.4),
        lambda: optax.chain(
            optax.clip_by_global_norm(0.5),
            optax.scale_by_adam(),
            optax.add_decayed_weights(0.1, biases_spared),
            optax.scale_by_learning_rate(hand_schedule("warmup_cosine")),
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", HAND_BUILT)
def test_each_setting_updates_as_a_hand_built_optax_chain(case):
    changes, build, exact = HAND_BUILT[case]
    got = run_updates(make_optimizer(schedule_config(**changes), TRAIN_SIZE))
    want = run_updates(build())
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_same_updates(a, b, exact), step


def test_weight_decay_spares_the_biases():
    plain, decayed = (
        run_updates(make_optimizer(schedule_config(weight_decay=wd), TRAIN_SIZE))[-1]
        for wd in (0, 0.1)
    )
    for (W, b), (W_decayed, b_decayed) in zip(plain, decayed, strict=True):
        np.testing.assert_array_equal(b, b_decayed)
        assert not np.allclose(W, W_decayed)


def test_the_learning_rate_a_run_applies_is_its_schedules(data_dir, tiny_config, tmp_path):
    """What a real run applies, read from its parameters: with SGD, full-batch steps (one an epoch)
    move the parameters by the rate times the gradient, so each step's rate is
    -<update, g> / <g, g>, against Optax's linear schedule written out: 0.1, then 0.1 * 2/3, then
    0.1 / 3."""
    from mnist_jax import data
    from mnist_jax.models.mlp import loss
    from mnist_jax.runs import checkpoints
    from mnist_jax.steps import make_steps, normalise

    config = tiny_config.replace(
        optimizer="sgd",
        learning_rate=0.1,
        schedule="linear",
        batch_size=300,
        loss_reduction="mean",
        num_epochs=3,
        keep_checkpoints=3,
    )
    train(config, str(tmp_path))
    template = make_steps(config).init(config.seed)
    states = [template] + [
        checkpoints.load(str(tmp_path / "checkpoints" / f"epoch-{e:05d}.npz")).restore(template)
        for e in (1, 2, 3)
    ]
    share = data.load(data_dir)["train"]
    inputs = normalise(share.images, jnp.float32)

    def mean_loss(params):
        return loss(params, inputs, share.labels) / len(share.labels)

    applied = []
    for before, after in zip(states[:-1], states[1:], strict=True):
        g = jax.tree.leaves(jax.grad(mean_loss)(before.params))
        update = [
            a - b
            for a, b in zip(
                jax.tree.leaves(after.params), jax.tree.leaves(before.params), strict=True
            )
        ]
        applied.append(
            -sum(float(jnp.vdot(u, d)) for u, d in zip(update, g, strict=True))
            / sum(float(jnp.vdot(d, d)) for d in g)
        )
    assert applied == pytest.approx([0.1, 0.1 * 2 / 3, 0.1 / 3], rel=1e-3)
