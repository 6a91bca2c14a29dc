"""Training on the small synthetic dataset: learning, exact step semantics, run folders."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, accuracy, data, loss, streams, train
from mnist_jax.optimizers import make_optimizer
from mnist_jax.pipelines import evaluate_over
from mnist_jax.rundir import RunDir, RunExistsError
from mnist_jax.steps import Batch, init_state, make_steps, normalise
from tests.conftest import NUM_TRAIN


@pytest.fixture(scope="module")
def config(data_dir):
    return Config(layer_sizes=(784, 32, 10), batch_size=32, num_epochs=3, eval_batch_size=64,
                  data_dir=data_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def result(config, run_dir):
    return train(config, run_dir)


def test_short_run_learns_and_records_every_epoch(result):
    history = result.history
    assert [m.epoch for m in history] == [0, 1, 2, 3]
    assert history[0].epoch_seconds is None and all(m.epoch_seconds > 0 for m in history[1:])
    assert history[0].test_accuracy < 0.3 and result.final_test_accuracy >= 0.9
    assert history[-1].train_loss < history[0].train_loss
    assert [W.shape for W, _ in result.params] == [(784, 32), (32, 10)]


def test_same_config_same_result(config, result):
    again = train(config)
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(a, b)
    strip = lambda h: [(m.train_accuracy, m.test_accuracy, m.train_loss) for m in h]  # noqa: E731
    assert strip(again.history) == strip(result.history)


def _batch(images, labels, size):
    pad = size - len(labels)
    return Batch(np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))),
                      np.pad(labels, (0, pad)), np.arange(size) < len(labels))


def test_padded_step_equals_a_step_on_the_real_rows(config, synthetic):
    images, labels = synthetic["train"][0][:20, ..., None], synthetic["train"][1][:20].astype(np.int32)
    state = init_state(config)
    optimizer = make_optimizer(config)
    new_state, batch_loss = jax.jit(make_steps(config).train_step)(state, _batch(images, labels, 32))
    # Independently: Adam on the 20-example batch, no padding.
    inputs = images.reshape(20, -1).astype(np.float32) / 255
    grads = jax.grad(loss)(state.params, inputs, labels)
    updates, _ = optimizer.update(grads, state.opt_state, state.params)
    expected = optax.apply_updates(state.params, updates)
    np.testing.assert_allclose(batch_loss, loss(state.params, inputs, labels), rtol=1e-5)
    for got, want in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_first_step_is_adam_as_the_seed_ran_it(config, synthetic):
    images, labels = synthetic["train"][0][:32, ..., None], synthetic["train"][1][:32].astype(np.int32)
    state = init_state(config)
    g = jax.grad(loss)(state.params, normalise(images, jnp.float32), labels)
    new_state, _ = jax.jit(make_steps(config).train_step)(state, _batch(images, labels, 32))
    # autograd's adam, first step: m_hat = g, v_hat = g**2.
    lr, eps = config.learning_rate, config.eps
    for p, grad, new in zip(jax.tree.leaves(state.params), jax.tree.leaves(g), jax.tree.leaves(new_state.params)):
        expected = np.asarray(p) - lr * np.asarray(grad) / (np.abs(np.asarray(grad)) + eps)
        np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-7)


def test_evaluate_over_padded_batches_counts_every_example_once(config, data_dir):
    state = init_state(config)
    images, labels = data.load_split("train", data_dir)
    stream = streams.batch_chunks(images, labels, np.arange(NUM_TRAIN)[None], 64)
    evaluate = jax.jit(functools.partial(evaluate_over, make_steps(config).eval_step))
    correct, total_loss = 0, 0.0
    for chunk in streams.prefetch_to_device(stream):
        chunk_correct, chunk_loss = evaluate(state.params, chunk)
        correct, total_loss = correct + chunk_correct, total_loss + chunk_loss
    inputs = normalise(images, jnp.float32)
    assert int(correct) == round(NUM_TRAIN * float(accuracy(state.params, inputs, labels)))
    assert float(total_loss) == pytest.approx(float(loss(state.params, inputs, labels)), rel=1e-5)


def test_float64_runs_in_float64(config):
    result = train(config.replace(dtype="float64", init="numpy", num_epochs=1))
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(result.params))
    assert result.final_test_accuracy > 0.5


def test_run_folder_contents(config, result, run_dir):
    out = run_dir
    assert sorted(os.listdir(out)) == ["checkpoints", "config.json", "curves.png", "metrics.jsonl", "params.npz",
                                       "summary.json"]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "completed"
    assert summary["config"] == config.to_dict()
    assert summary["final_test_accuracy"] == result.final_test_accuracy
    device = jax.devices()[0]  # the run took every device of the default platform
    assert summary["num_devices"] == jax.device_count()
    assert summary["device"] == f"{device.platform}:{device.device_kind}"
    assert {"jax", "optax", "tensorflow-datasets"} <= set(summary["versions"])
    assert [set(m) >= {"epoch", "train_accuracy", "test_accuracy", "train_loss", "epoch_seconds"}
            for m in summary["history"]] == [True] * 4
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert lines == summary["history"]
    loaded_config, params = RunDir(out).load()
    assert loaded_config == config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.params)):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_run_folder_is_not_overwritten_by_default(config, tmp_path):
    RunDir.open(str(tmp_path), config).close()
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(config, str(tmp_path))
    assert train(config.replace(num_epochs=1), str(tmp_path), overwrite=True).history[-1].epoch == 1
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["num_epochs"] == 1
