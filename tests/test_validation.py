"""A validation split held out of the training split, reported apart."""

import json

import jax.numpy as jnp
import pytest

from mnist_jax import Config, ConfigError, accuracy, data, train
from mnist_jax.cli import main
from mnist_jax.rundir import RunDir
from mnist_jax.steps import normalise
from tests.conftest import NUM_TRAIN


def test_validation_is_held_out_and_scored_apart(data_dir, tmp_path, capsys):
    config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=2, eval_batch_size=62,
                    validation_size=100, data_dir=data_dir)
    result = train(config)
    names = data.split_names(100, data_dir)
    assert names == {"train": f"train[:{NUM_TRAIN - 100}]", "test": "test", "validation": f"train[{NUM_TRAIN - 100}:]"}
    images, labels = data.load_split(names["validation"], data_dir)
    assert len(labels) == 100
    expected = float(accuracy(result.params, normalise(images, jnp.float32), labels))
    assert result.history[-1].validation_accuracy == pytest.approx(expected, abs=1e-6)
    # training used the other 200: its accuracy is over 200 examples
    train_images, train_labels = data.load_split(names["train"], data_dir)
    assert len(train_labels) == NUM_TRAIN - 100
    assert result.history[-1].train_accuracy == pytest.approx(
        float(accuracy(result.params, normalise(train_images, jnp.float32), train_labels)), abs=1e-6)
    assert all(m.validation_loss is not None for m in result.history)

    assert main(["train", "--layer-sizes", "784,16,10", "--batch-size", "32", "--epochs", "1",
                 "--eval-batch-size", "62", "--validation-size", "100", "--data-dir", data_dir,
                 "--out", str(tmp_path / "run"), "--pipeline", "stream"]) == 0
    assert "| Validation accuracy |" in capsys.readouterr().out
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    _, saved = RunDir(str(tmp_path / "run")).load()  # the stream run's own held-out rows, evaluated here
    assert line["validation_accuracy"] == pytest.approx(
        float(accuracy(saved, normalise(images, jnp.float32), labels)), abs=1e-6)


def test_validation_size_is_checked(data_dir):
    with pytest.raises(ConfigError, match="validation_size needs shuffle"):
        Config(validation_size=10, shuffle=False)
    with pytest.raises(data.DataError, match="leaves no training examples"):
        data.split_names(NUM_TRAIN, data_dir)
