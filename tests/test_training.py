"""`train`: a short run learns and records every epoch, deterministically; its folder; a validation
split scored apart; the best epoch kept; every preset trains."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnist_jax import Config, accuracy, data, preset, train
from mnist_jax.cli import main
from mnist_jax.config import PRESETS
from mnist_jax.errors import RunExistsError
from mnist_jax.records import EpochMetrics, best_epoch
from mnist_jax.runs.rundir import RunDir
from mnist_jax.steps import normalise
from tests.helpers import NUM_TRAIN, assert_same_params, params_of, tiny


@pytest.fixture(scope="module")
def config(data_dir):
    return Config(
        layer_sizes=(784, 32, 10),
        batch_size=32,
        num_epochs=3,
        eval_batch_size=64,
        data_dir=data_dir,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def result(config, run_dir):
    return train(config, run_dir)


@pytest.mark.device
def test_short_run_learns_and_records_every_epoch(result):
    history = result.history
    assert [m.epoch for m in history] == [0, 1, 2, 3]
    assert history[0].epoch_seconds is None and all(m.epoch_seconds > 0 for m in history[1:])
    assert history[0].test_accuracy < 0.3 and result.final_test_accuracy >= 0.9
    assert history[-1].train_loss < history[0].train_loss
    assert [W.shape for W, _ in result.params] == [(784, 32), (32, 10)]


@pytest.mark.device
def test_same_config_same_result(config, result):
    again = train(config)
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)
    strip = lambda h: [(m.train_accuracy, m.test_accuracy, m.train_loss) for m in h]  # noqa: E731
    assert strip(again.history) == strip(result.history)


@pytest.mark.device
def test_float64_runs_in_float64(config):
    result = train(config.replace(dtype="float64", init="numpy", num_epochs=1))
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(result.params))
    assert result.final_test_accuracy > 0.5


def test_run_folder_contents(config, result, run_dir):
    out = run_dir
    assert sorted(os.listdir(out)) == [
        "checkpoints",
        "config.json",
        "curves.png",
        "metrics.jsonl",
        "params.npz",
        "summary.json",
    ]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "completed"
    assert summary["config"] == config.to_dict()
    assert summary["final_test_accuracy"] == result.final_test_accuracy
    device = jax.devices()[0]  # the run took every device of the default platform
    assert summary["num_devices"] == jax.device_count()
    assert summary["device"] == f"{device.platform}:{device.device_kind}"
    assert {"jax", "optax", "tensorflow-datasets"} <= set(summary["versions"])
    assert [
        set(m) >= {"epoch", "train_accuracy", "test_accuracy", "train_loss", "epoch_seconds"}
        for m in summary["history"]
    ] == [True] * 4
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert lines == summary["history"]
    loaded_config, params = RunDir(out).load()
    assert loaded_config == config
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.params), strict=True):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_run_folder_is_not_overwritten_by_default(config, tmp_path):
    RunDir.open(str(tmp_path), config).close()
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(config, str(tmp_path))
    assert (
        train(config.replace(num_epochs=1), str(tmp_path), overwrite=True).history[-1].epoch == 1
    )
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["num_epochs"] == 1


def test_validation_is_held_out_and_scored_apart(data_dir, tmp_path, capsys):
    config = tiny(data_dir, validation_size=100)
    result = train(config)
    shares, whole = data.load(data_dir, validation_size=100), data.load(data_dir)["train"]
    # the validation rows are the training split's last
    assert sorted(shares) == ["test", "train", "validation"]
    np.testing.assert_array_equal(shares["validation"].labels, whole.labels[NUM_TRAIN - 100 :])
    images, labels = shares["validation"].images, shares["validation"].labels
    assert len(labels) == 100
    expected = float(accuracy(result.params, normalise(images, jnp.float32), labels))
    assert result.history[-1].validation_accuracy == pytest.approx(expected, abs=1e-6)
    # training used the other 200: its accuracy is over 200 examples
    train_images, train_labels = shares["train"].images, shares["train"].labels
    assert len(train_labels) == NUM_TRAIN - 100
    assert result.history[-1].train_accuracy == pytest.approx(
        float(accuracy(result.params, normalise(train_images, jnp.float32), train_labels)),
        abs=1e-6,
    )
    assert all(m.validation_loss is not None for m in result.history)

    assert (
        main(
            [
                "train",
                "--layer-sizes",
                "784,16,10",
                "--batch-size",
                "32",
                "--epochs",
                "1",
                "--eval-batch-size",
                "62",
                "--validation-size",
                "100",
                "--data-dir",
                data_dir,
                "--out",
                str(tmp_path / "run"),
                "--pipeline",
                "stream",
            ]
        )
        == 0
    )
    assert "| Validation accuracy |" in capsys.readouterr().out
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    _, saved = RunDir(
        str(tmp_path / "run")
    ).load()  # the stream run's own held-out rows, evaluated here
    assert line["validation_accuracy"] == pytest.approx(
        float(accuracy(saved, normalise(images, jnp.float32), labels)), abs=1e-6
    )


def ascent_after(steps: int, learning_rate: float = 0.01) -> optax.GradientTransformation:
    """Adam for `steps` steps, then the same steps uphill: validation accuracy peaks, then
    falls."""
    adam = optax.adam(learning_rate)

    def update(grads, state, params=None):
        count, inner = state
        updates, inner = adam.update(grads, inner, params)
        sign = jnp.where(count < steps, 1.0, -20.0)
        return jax.tree.map(lambda u: sign * u, updates), (count + 1, inner)

    return optax.GradientTransformation(
        lambda params: (jnp.zeros((), jnp.int32), adam.init(params)), update
    )


def test_the_best_epoch_is_recorded_and_its_parameters_kept(data_dir, tmp_path, capsys):
    """A run whose validation peak is known: Adam for two epochs (10 steps each), then uphill. The
    kept parameters are, bit for bit, those of the same run stopped after its second epoch."""
    config = Config(
        layer_sizes=(784, 16, 10),
        batch_size=20,
        eval_batch_size=50,
        num_epochs=5,
        validation_size=100,
        data_dir=data_dir,
    )
    result = train(config, str(tmp_path / "run"), optimizer=ascent_after(20, 0.001))
    validation = [m.validation_accuracy for m in result.history]
    assert (
        result.best_epoch == int(np.argmax(validation)) == 2
        and max(validation[3:]) < validation[2]
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"] == {
        "epoch": 2,
        "validation_accuracy": validation[2],
        "test_accuracy": result.history[2].test_accuracy,
        "test_loss": result.history[2].test_loss,
    }
    with np.load(tmp_path / "run" / "params-best.npz") as f:
        kept = dict(f)
    peak = train(
        config.replace(num_epochs=2), str(tmp_path / "peak"), optimizer=ascent_after(20, 0.001)
    )
    assert_same_params(kept, params_of(tmp_path / "peak"))
    assert peak.history[-1].validation_accuracy == validation[2]
    assert main(["eval", str(tmp_path / "run"), "--best"]) == 0
    assert (
        f"test accuracy {100 * summary['best']['test_accuracy']:.2f}%" in capsys.readouterr().out
    )
    plain = train(config.replace(validation_size=0, num_epochs=1), str(tmp_path / "plain"))
    assert plain.best_epoch is None and not (tmp_path / "plain" / "params-best.npz").exists()
    assert main(["eval", str(tmp_path / "plain"), "--best"]) == 2
    assert "has no params-best.npz" in capsys.readouterr().err


def test_a_tie_for_the_best_epoch_goes_to_the_earliest(data_dir, tmp_path):
    """The rule as documented (`records.best_epoch`): on a history of equals, and in a run that
    never moves (no update at all), whose every epoch ties with epoch 0."""

    def scored(*validation):
        return [
            EpochMetrics(epoch, 0.0, 0.0, 0.0, 0.0, None, None, 0.0, accuracy)
            for epoch, accuracy in enumerate(validation)
        ]

    assert best_epoch(scored(0.5, 0.9, 0.7, 0.9, 0.9)) == 1
    assert best_epoch(scored(0.3, 0.3)) == 0
    config = tiny(data_dir, num_epochs=3, validation_size=100)
    result = train(config, str(tmp_path / "still"), optimizer=optax.set_to_zero())
    assert len({m.validation_accuracy for m in result.history}) == 1
    assert result.best_epoch == 0
    summary = json.loads((tmp_path / "still" / "summary.json").read_text())
    assert summary["best"]["epoch"] == 0


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_and_trains_one_epoch(name, data_dir):
    config = preset(name).replace(
        num_epochs=1, warmup_epochs=min(preset(name).warmup_epochs, 0.5), data_dir=data_dir
    )
    result = train(config)
    assert [m.epoch for m in result.history] == [0, 1]
    assert all(np.isfinite([m.train_loss, m.test_loss]).all() for m in result.history)
    assert result.history[1].train_accuracy > result.history[0].train_accuracy


def test_a_cnn_run_records_and_shows_the_form_it_took(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cnn = ["--model", "cnn", "--cnn-channels", "2,4", "--cnn-dense", "8", "--epochs", "1"]
    flags = ["--batch-size", "32", "--eval-batch-size", "62", "--data-dir", data_dir]
    assert main(["train", *cnn, *flags, "--out", str(out)]) == 0
    form = "winograd" if jax.default_backend() == "cpu" else "native"  # `auto` there
    assert json.loads((out / "config.json").read_text())["cnn_form"] == form
    assert json.loads((out / "summary.json").read_text())["config"]["cnn_form"] == form
    assert f"Training cnn ({form} form) with adam" in capsys.readouterr().out
    # resumed and extended as recorded: the same form, no mismatch with `auto`
    assert main(["train", "--resume", str(out), "--epochs", "2", "--data-dir", data_dir]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["cnn_form"] == form
