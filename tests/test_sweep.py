"""Seed sweeps: one vmapped program, each model equal to its own run, the statistics printed and
saved."""

import json

import numpy as np
import pytest

from mnist_jax import train
from mnist_jax.cli import main
from mnist_jax.records import metric_names
from mnist_jax.sweep import sweep
from tests.helpers import assert_models_equal_their_runs, tiny


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_model_of_a_sweep_equals_its_own_run(tiny_config, shuffle):
    config = tiny_config.replace(shuffle=shuffle)
    seeds = [3, 4, 5]
    result = sweep(config, seeds)
    assert result.histories.shape == (3, 3, len(metric_names(("train", "test"))))
    assert_models_equal_their_runs(result, config, seeds, rtol=1e-5, atol=1e-6)
    # the seeds really differ
    assert len({float(result.histories[i, -1, 2]) for i in range(3)}) == 3


def test_sweep_command_prints_the_table_and_writes_json(data_dir, tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                "--seeds",
                "3",
                "--layer-sizes",
                "784,16,10",
                "--batch-size",
                "32",
                "--epochs",
                "1",
                "--eval-batch-size",
                "62",
                "--data-dir",
                data_dir,
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # the legend, then 2 epochs x 2 splits
    assert "3 seeds (42..44)" in out and out.count(" +- ") == 1 + 4
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["seeds"] == [42, 43, 44] and set(saved["per_seed"]) == {"42", "43", "44"}
    last = saved["statistics"][-1]["test_accuracy"]
    per_seed = [saved["per_seed"][s][-1]["test_accuracy"] for s in ("42", "43", "44")]
    assert last["mean"] == pytest.approx(np.mean(per_seed)) and last["n"] == 3
    assert main(["sweep", "--seeds", "0"]) == 2


def test_a_sweep_reports_the_validation_split_as_train_does(tiny_config):
    config = tiny_config.replace(num_epochs=1, validation_size=50)
    result = sweep(config, [7, 8])
    assert result.metrics == metric_names(("train", "validation", "test"))
    column = result.metrics.index("validation_accuracy")
    for i, seed in enumerate((7, 8)):
        alone = train(config.replace(seed=seed)).history
        np.testing.assert_allclose(
            result.histories[i, :, column], [m.validation_accuracy for m in alone], atol=1e-12
        )


def test_a_sweep_records_each_seeds_best_epoch(data_dir):
    config = tiny(data_dir, num_epochs=3, validation_size=100, learning_rate=0.01)
    result = sweep(config, [1, 2, 3])
    best = result.summary()["best"]
    validation = result.histories[:, :, result.metrics.index("validation_accuracy")]
    test = result.histories[:, :, result.metrics.index("test_accuracy")]
    assert best["epochs"] == [int(np.argmax(row)) for row in validation]
    chosen = [t[e] for t, e in zip(test, best["epochs"], strict=True)]
    assert best["test_accuracy"]["mean"] == pytest.approx(np.mean(chosen))
