"""Models with state: BatchNorm's statistics through the harness, for a hand-written stateful
`Model` and for Flax NNX, Flax Linen and Equinox CNNs adapted by `mnist_jax.models`."""

import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import Model, data, models, train
from mnist_jax.cli import main
from mnist_jax.models.interface import stateful_form
from mnist_jax.runs import checkpoints
from mnist_jax.runtime.memory import estimate_bytes
from mnist_jax.steps import make_steps
from mnist_jax.sweep import grid, sweep
from tests import framework_models
from tests.helpers import (
    MNIST_JAX,
    NUM_TRAIN,
    assert_same_params,
    params_of,
    run_in_a_child,
    scores,
    tiny,
    train_as_a_child,
    worker,
)

FRAMEWORKS = ["nnx_cnn", "linen_cnn", "equinox_cnn"]


def path_of(name: str) -> str:
    return f"tests.framework_models:{name}"


def counting_model(config) -> Model:
    """A linear classifier whose state counts the training examples it has seen and sums their
    pixels: exactly what the harness fed it, padding included if any got through."""

    def init(key):
        return (
            {"w": jnp.zeros((784, 10)), "b": jnp.zeros(10)},
            {"examples": jnp.zeros((), jnp.int32), "pixel_sum": jnp.zeros((), jnp.float64)},
        )

    def apply(params, state, images, *, key, training):
        logits = images.reshape(images.shape[0], -1) @ params["w"] + params["b"]
        if training:
            state = {
                "examples": state["examples"] + images.shape[0],
                "pixel_sum": state["pixel_sum"] + images.astype(state["pixel_sum"].dtype).sum(),
            }
        return logits, state

    return Model(init, apply, stateful=True)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
@pytest.mark.device
def test_padding_rows_never_reach_a_models_state(data_dir, pipeline):
    # 300 examples in batches of 32: the last batch has 12 real rows and 20 of padding, and on
    # the stream path the last chunk two batches that are all padding.
    config = tiny(data_dir, dtype="float64", pipeline=pipeline)
    result = train(config, model=counting_model(config))
    images = data.load(data_dir)["train"].images.astype(np.float64) / 255
    assert int(result.model_state["examples"]) == config.num_epochs * NUM_TRAIN
    np.testing.assert_allclose(
        float(result.model_state["pixel_sum"]), config.num_epochs * images.sum(), rtol=1e-12
    )


def floating_leaves(tree) -> list[np.ndarray]:
    return [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    ]


# The built-in cnn's BatchNorm, small: its settings beside the frameworks' import paths.
BUILTIN_BATCHNORM = dict(model="cnn", cnn_batchnorm=True, cnn_channels=(4, 8), cnn_dense=16)


@pytest.mark.parametrize("name", [*FRAMEWORKS, "cnn_batchnorm"])
def test_a_batchnorm_models_statistics_move_and_evaluation_reads_them(data_dir, name):
    """For each framework's CNN and the built-in cnn with `cnn_batchnorm`."""
    changes = BUILTIN_BATCHNORM if name == "cnn_batchnorm" else dict(model=path_of(name))
    config = tiny(data_dir, loss_reduction="mean", learning_rate=0.01, **changes)
    steps = make_steps(config)
    initial = steps.init(config.seed)
    result = train(config)
    assert result.history[-1].test_accuracy > result.history[0].test_accuracy
    moved = floating_leaves(result.model_state)
    assert moved and all(
        not np.array_equal(a, b)
        for a, b in zip(moved, floating_leaves(initial.model_state), strict=True)
    )

    model = (
        models.cnn(config) if name == "cnn_batchnorm" else getattr(framework_models, name)(config)
    )
    init, apply = stateful_form(model)
    test = data.load(data_dir)["test"]
    images = jnp.asarray(test.images, jnp.float32) / 255
    evaluated, _ = apply(result.params, result.model_state, images, None, False)
    trained, _ = apply(result.params, result.model_state, images, jax.random.key(0), True)
    at_start, _ = apply(result.params, initial.model_state, images, None, False)
    assert not np.allclose(evaluated, trained)  # training mode: batch statistics and dropout
    assert not np.allclose(evaluated, at_start)  # evaluation reads the running statistics
    # The harness's test accuracy is the model's, in evaluation mode with the trained statistics.
    correct = np.sum(np.argmax(evaluated, axis=1) == test.labels)
    assert result.history[-1].test_accuracy == correct / len(test.labels)


@pytest.mark.parametrize(
    "name, pipeline", [("nnx_cnn", "stream"), ("linen_cnn", "device"), ("equinox_cnn", "stream")]
)
def test_a_frameworks_model_resumes_after_sigkill_bit_for_bit(data_dir, tmp_path, name, pipeline):
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    # Killed in its third and last epoch: on the stream path after a chunk, mid-epoch.
    proc = run_in_a_child(
        [*worker("kill"), data_dir, killed, "3", pipeline, "5", "3", "0", path_of(name)]
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.latest(killed).epoch == 2
    resumed = run_in_a_child([*MNIST_JAX, "train", "--resume", killed, "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    train_as_a_child(
        tiny(data_dir, num_epochs=3, pipeline=pipeline, model=path_of(name)),
        whole,
        tensorboard=True,
    )
    for npz in ("params.npz", "model-state.npz"):
        assert params_of(whole, npz)  # a model with state writes both
        assert_same_params(params_of(killed, npz), params_of(whole, npz))
    assert scores(killed) == scores(whole)
    assert main(["eval", killed]) == 0  # reads the model's state beside its parameters
    assert main(["report", killed, whole, "--out", str(tmp_path / "report")]) == 0
    assert any((tmp_path / "whole" / "tensorboard").iterdir())


def test_the_memory_estimate_counts_a_models_state(data_dir):
    config = tiny(data_dir, model=path_of("linen_cnn"))
    parts = estimate_bytes(config)
    # BatchNorm's mean and variance of 4 channels, float32, as read and as updated.
    assert parts["model state"] == 2 * (4 + 4) * 4
    assert estimate_bytes(tiny(data_dir))["model state"] == 0


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_a_frameworks_two_seed_sweep_equals_its_two_runs(data_dir, name):
    config = tiny(data_dir, model=path_of(name), num_epochs=1)
    seeds = [1, 2]
    swept = sweep(config, seeds)
    for i, seed in enumerate(seeds):
        alone = train(config.replace(seed=seed))
        for ours, theirs in ((swept.params, alone.params), (swept.model_state, alone.model_state)):
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(
            swept.histories[i, :, :2], [(m.train_accuracy, m.test_accuracy) for m in alone.history]
        )
    # The seeds decide the initial weights: the two models differ.
    first = jax.tree.leaves(swept.params)[0]
    assert not np.array_equal(first[0], first[1])


def test_the_best_epochs_state_is_kept_beside_its_parameters(data_dir, tmp_path):
    # A validation split of 60: each epoch trains on 240 examples, so the counting model's state
    # after epoch e counts e * 240 of them.
    config = tiny(data_dir, dtype="float64", validation_size=60, num_epochs=4, learning_rate=0.05)
    result = train(config, str(tmp_path), model=counting_model(config))
    best = max(result.history, key=lambda m: m.validation_accuracy).epoch  # the earliest of equals
    assert 0 < best < config.num_epochs and result.best_epoch == best
    assert int(result.best_model_state["examples"]) == best * 240
    assert int(result.model_state["examples"]) == config.num_epochs * 240
    assert int(params_of(tmp_path, "model-state-best.npz")["examples"]) == best * 240
    assert int(params_of(tmp_path, "model-state.npz")["examples"]) == config.num_epochs * 240


def test_a_grid_of_a_frameworks_model_trains_its_cells_together_each_as_its_run(data_dir):
    # The learning rate is traced: both cells are one program, each model with its own state.
    config = tiny(data_dir, model=path_of("linen_cnn"), num_epochs=1)
    cells = grid(config, {"learning_rate": [0.001, 0.02]}, seeds=[1])
    assert [cell.trained_with for cell in cells] == [2, 2]
    for cell in cells:
        alone = train(cell.config.replace(seed=1))
        for ours, theirs in ((cell.params, alone.params), (cell.model_state, alone.model_state)):
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
                np.testing.assert_allclose(np.asarray(a)[0], b, rtol=2e-5, atol=2e-6)
    statistics = [jax.tree.leaves(cell.model_state) for cell in cells]
    assert not np.allclose(statistics[0][0], statistics[1][0])  # the rates trained them apart
