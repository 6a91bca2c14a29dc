"""Your own model and optimizer: by import path and as objects, through every part of the harness;
every bad input refused first."""

import json
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, Model, data, loss, models, train
from mnist_jax.cli import main
from mnist_jax.pipelines import local_orders
from mnist_jax.reporters import Reporter
from mnist_jax.steps import epoch_key, init_state, normalise
from mnist_jax.sweep import sweep
from tests import custom_models
from tests.helpers import (
    MNIST_JAX,
    TINY_FLAGS,
    params_of,
    run_in_a_child,
    tiny,
    train_as_a_child,
    worker,
)

CUSTOM = "tests.custom_models:tiny_cnn"


def test_cnn_trains_and_its_parameters_are_saved_by_key_path(data_dir, tmp_path, capsys):
    """The CNN through the command, narrowed (the full-size one trains an epoch in
    test_training.py, and its forward pass is checked exactly in test_models.py)."""
    out = str(tmp_path / "cnn")
    assert (
        main(
            [
                "train",
                "--preset",
                "cnn",
                "--cnn-channels",
                "4,8",
                "--cnn-dense",
                "16",
                "--epochs",
                "1",
                *TINY_FLAGS,
                "--data-dir",
                data_dir,
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads(Path(out, "summary.json").read_text())
    first, last = summary["history"][0], summary["history"][-1]
    assert summary["config"]["model"] == "cnn" and last["train_loss"] < first["train_loss"]
    assert last["test_accuracy"] > first["test_accuracy"]
    assert sorted(params_of(out)) == [
        "conv0/b",
        "conv0/w",
        "conv1/b",
        "conv1/w",
        "dense0/b",
        "dense0/w",
        "dense1/b",
        "dense1/w",
    ]
    capsys.readouterr()
    assert main(["eval", out]) == 0
    assert f"test accuracy {100 * summary['final_test_accuracy']:.2f}%" in capsys.readouterr().out


def soft_sign_sgd(learning_rate):
    """A hand-made optimizer object: steps of -lr * g / (1 + |g|), smooth in g, so that
    float rounding (a GPU's TF32 matmuls, say) cannot flip a step the way sign(g) could."""
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda grads, state, params=None: (
            jax.tree.map(lambda g: -learning_rate * g / (1 + jnp.abs(g)), grads),
            state,
        ),
    )


def test_an_optimizer_object_gives_the_hand_written_update(data_dir, tiny_config, tmp_path):
    config = tiny_config
    result = train(config, str(tmp_path / "run"), optimizer=soft_sign_sgd(0.01))
    share = data.load(data_dir)["train"]
    params = init_state(config).params
    for order in local_orders(config, share, "train", range(1, 3)):
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            inputs, labels = normalise(share.images[rows], jnp.float32), share.labels[rows]
            # the summed NLL, on the real rows alone
            grads = jax.grad(loss)(params, inputs, labels)
            params = jax.tree.map(lambda p, g: p - 0.01 * g / (1 + jnp.abs(g)), params, grads)
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["optimizer"].startswith("object:GradientTransformation(") and saved[
        "resume_needs_objects"
    ] == ["optimizer"]


def test_an_optimizer_by_import_path_is_what_it_builds(tiny_config):
    config = tiny_config.replace(num_epochs=1, learning_rate=0.05)
    by_path = train(config.replace(optimizer="tests.custom_models:nesterov"))
    by_object = train(config, optimizer=optax.sgd(0.05, momentum=0.9, nesterov=True))
    for a, b in zip(
        jax.tree.leaves(by_path.params), jax.tree.leaves(by_object.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert by_path.config.optimizer == "tests.custom_models:nesterov"


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_a_model_by_import_path_trains_from_the_cli_on_both_paths(data_dir, tmp_path, pipeline):
    out = str(tmp_path / pipeline)
    assert (
        main(
            [
                "train",
                "--model",
                CUSTOM,
                "--pipeline",
                pipeline,
                "--epochs",
                "3",
                "--lr",
                "0.01",
                *TINY_FLAGS,
                "--data-dir",
                data_dir,
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["config"]["model"] == CUSTOM and summary["final_test_accuracy"] >= 0.8
    assert sorted(params_of(out)) == ["conv/b", "conv/w", "out/b", "out/w"]


def test_both_paths_draw_the_same_per_step_keys(tiny_config):
    config = tiny_config.replace(model=CUSTOM, learning_rate=0.01)
    device, stream = (train(config.replace(pipeline=p)) for p in ("device", "stream"))
    for a, b in zip(jax.tree.leaves(device.params), jax.tree.leaves(stream.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    other_seed = train(config.replace(seed=7, pipeline="device"))
    assert other_seed.history[-1].train_loss != device.history[-1].train_loss


def test_a_model_without_a_key_parameter_is_called_without_one(tiny_config):
    result = train(tiny_config.replace(model="tests.custom_models:linear", num_epochs=1))
    assert result.final_test_accuracy > 0.5


def test_a_custom_model_resumes_bit_identically_after_a_kill(data_dir, tmp_path):
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    proc = run_in_a_child(
        [*worker("kill"), data_dir, killed, "2", "stream", "5", "3", "0", CUSTOM]
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    proc = run_in_a_child([*MNIST_JAX, "train", "--resume", killed, "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    train_as_a_child(tiny(data_dir, num_epochs=3, model=CUSTOM, pipeline="stream"), whole)
    resumed, uninterrupted = params_of(killed), params_of(whole)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])


class InterruptAfter(Reporter):
    """Sends this process SIGINT once epoch `epoch` is trained: the run stops there, as after
    Ctrl-C."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch(self, epoch, batches_done):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_the_built_in_model_as_an_object_trains_as_by_name(tiny_config, pipeline):
    """The seed preset's MLP passed as a `Model` object goes through the same interface, bit for
    bit (tests/test_real_data.py holds the named model to the seed notebook's table)."""
    config = tiny_config.replace(pipeline=pipeline, dtype="float64", init="numpy", shuffle=False)
    named, passed = train(config), train(config, model=models.mlp(config))
    assert [m.train_loss for m in passed.history] == [m.train_loss for m in named.history]
    for a, b in zip(jax.tree.leaves(passed.params), jax.tree.leaves(named.params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.device
def test_model_and_optimizer_objects_record_and_resume(tiny_config, tmp_path, capsys):
    config = tiny_config.replace(num_epochs=3)
    model, out = custom_models.tiny_cnn(config), str(tmp_path / "objects")
    stopped = train(
        config, out, model=model, optimizer=optax.adam(0.01), reporter=InterruptAfter(2)
    )
    assert stopped.status == "interrupted" and stopped.history[-1].epoch == 2
    saved = json.loads(Path(out, "config.json").read_text())
    assert saved["model"].startswith("object:Model(tests.custom_models.tiny_cnn.<locals>.init")
    assert saved["optimizer"].startswith("object:GradientTransformation")
    assert saved["resume_needs_objects"] == ["model", "optimizer"]
    assert main(["train", "--resume", out, "--quiet"]) == 2  # the command line cannot rebuild them
    err = capsys.readouterr().err
    assert (
        "was a Python object: pass the same object again" in err
        and len(err.strip().splitlines()) == 1
    )
    resumed = train(config, out, model=model, optimizer=optax.adam(0.01), resume=True)
    whole = train(config, str(tmp_path / "whole"), model=model, optimizer=optax.adam(0.01))
    assert resumed.status == "completed" and [m.epoch for m in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sweeps_and_grids_take_models(data_dir, tiny_config, tmp_path):
    assert (
        main(
            [
                "sweep",
                "--seeds",
                "2",
                "--epochs",
                "1",
                *TINY_FLAGS,
                "--grid",
                "model",
                "mlp",
                CUSTOM,
                "--data-dir",
                data_dir,
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    cells = json.loads((tmp_path / "grid.json").read_text())["cells"]
    assert [c["settings"]["model"] for c in cells] == ["mlp", CUSTOM]
    config = tiny_config.replace(model=CUSTOM, num_epochs=1)
    swept = sweep(config, [3, 4])
    for i, seed in enumerate((3, 4)):
        alone = train(config.replace(seed=seed))
        for a, b in zip(jax.tree.leaves(swept.params), jax.tree.leaves(alone.params), strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-5, atol=1e-6)


BAD_MODELS = [
    ("no_such_module.models:net", "cannot import no_such_module.models: ModuleNotFoundError"),
    ("tests.custom_models:missing", "tests.custom_models has no function 'missing'"),
    ("tests.custom_models:NOT_CALLABLE", "tests.custom_models has no function 'NOT_CALLABLE'"),
    ("tests.custom_models:raises", "the factory raised RuntimeError: no GPU budget left"),
    (
        "tests.custom_models:not_a_model",
        "the factory returned str, not mnist_jax.Model(init, apply)",
    ),
    (
        "tests.custom_models:wrong_shape",
        "apply returned (2, 5) for 2 images, not logits of shape (2, 10)",
    ),
    ("tests.custom_models:init_raises", "init raised ValueError: bad width"),
]

BAD_OPTIMIZERS = [
    (
        "tests.custom_models:not_an_optimizer",
        "the factory returned int, not an optax.GradientTransformation",
    ),
    ("tests.nowhere:adam", "cannot import tests.nowhere"),
]


@pytest.mark.parametrize(
    "flag, path, message",
    [("--model", *case) for case in BAD_MODELS]
    + [("--optimizer", *case) for case in BAD_OPTIMIZERS],
)
def test_a_bad_model_or_optimizer_is_refused_first(
    data_dir, tmp_path, capsys, flag, path, message
):
    out = tmp_path / "run"
    assert main(["train", flag, path, "--data-dir", data_dir, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{flag[2:]} {path!r}" in err and message in err and len(err.strip().splitlines()) == 1
    ), err
    assert not out.exists()


def test_an_object_model_must_be_a_model():
    with pytest.raises(Exception, match="init raised"):
        train(Config(), model=Model(lambda key: 1 / 0, lambda params, images: images))


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_the_harness_hands_each_step_its_own_key_and_evaluation_none(
    data_dir, tiny_config, pipeline
):
    """A model whose training output depends on its key, trained with plain SGD, against a
    hand-written loop that draws step i of epoch e's key as `fold_in(epoch_key(seed, e), i)`; the
    recorded losses against an evaluation with no key."""
    config = tiny_config.replace(
        model="tests.custom_models:key_noise",
        optimizer="sgd",
        learning_rate=0.1,
        loss_reduction="mean",
        pipeline=pipeline,
    )
    result = train(config)
    share = data.load(data_dir)["train"]
    apply = custom_models.key_noise(config).apply
    params = {"w": jnp.zeros((784, 10)), "b": jnp.zeros(10)}

    def batch_loss(params, images, labels, key):
        rows = len(labels)
        padded = jnp.pad(normalise(images, jnp.float32), ((0, config.batch_size - rows), (0, 0)))
        # noise drawn at the padded shape
        logits = apply(params, padded.reshape(-1, 28, 28, 1), key)[:rows]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    for epoch, order in zip(
        (1, 2), local_orders(config, share, "train", range(1, 3)), strict=True
    ):
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            rows = order[start : start + config.batch_size]
            key = jax.random.fold_in(epoch_key(config.seed, epoch), step)
            grads = jax.grad(batch_loss)(params, share.images[rows], share.labels[rows], key)
            params = jax.tree.map(lambda p, g: p - config.learning_rate * g, params, grads)
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # Evaluation passes no key: the recorded losses are the noiseless model's.
    test = data.load(data_dir)["test"]
    logits = apply(result.params, jnp.asarray(test.images, jnp.float32) / 255)
    test_loss = -jnp.mean(
        jnp.take_along_axis(jax.nn.log_softmax(logits), test.labels[:, None], axis=1)
    )
    assert result.history[-1].test_loss == pytest.approx(float(test_loss), rel=1e-5)
