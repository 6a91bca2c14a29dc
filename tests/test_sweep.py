"""Seed sweeps: one vmapped program, each model equal to its own run, its models spread over the
devices, the statistics printed and saved."""

import json
import math
import subprocess

import jax
import numpy as np
import pytest

from mnist_jax import train
from mnist_jax.cli import main
from mnist_jax.errors import DeviceError
from mnist_jax.records import metric_names
from mnist_jax.runtime import parallel
from mnist_jax.sweep import grid, sweep
from tests.helpers import assert_models_equal_their_runs, tiny, worker


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
    # where the 3 models trained: this host's devices, as many as `spread` says
    devices, per_device = parallel.spread(3, len(jax.devices()))
    assert (saved["num_devices"], saved["models_per_device"]) == (devices, per_device)
    assert (
        f"3 models on {devices} device{'s' if devices > 1 else ''}, {per_device} a device" in out
    )
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


@pytest.mark.parametrize(
    "models, devices, spread",
    [
        (7, 4, (4, 2)),
        (6, 4, (3, 2)),
        (3, 4, (3, 1)),
        (8, 4, (4, 2)),
        (5, 1, (1, 5)),
        (9, 8, (5, 2)),
    ],
)
def test_models_spread_over_as_few_devices_as_their_count_per_device_needs(
    models, devices, spread
):
    assert parallel.spread(models, devices) == spread


def test_every_spread_takes_the_fewest_models_per_device_and_no_idle_device():
    for models in range(1, 25):
        for devices in range(1, 10):
            used, per_device = parallel.spread(models, devices)
            assert used <= devices and used * per_device >= models
            assert per_device == math.ceil(models / devices)  # the fewest that fit
            assert (used - 1) * per_device < models  # the last device holds a real model


@pytest.fixture(scope="module")
def four_device_runs(data_dir, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """The sweep and grid of `tests/workers/sweep_devices.py`, on 1 device and spread over 4
    simulated ones, by file name."""
    out = tmp_path_factory.mktemp("sweep-devices")
    proc = subprocess.run(
        [*worker("sweep_devices"), data_dir, str(out)],
        env={**parallel.simulated_cpu_env(4), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for path in out.glob("*.npz"):
        with np.load(path) as f:
            runs[path.stem] = dict(f)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, many, spread_on_one, spread_on_many",
    [
        # 7 seeds: 2 a device on 4 devices, a copy in the spare place
        ("sweep", "4", [[1, 7, 1]], [[4, 2, 1]]),
        # 2 cells x 2 seeds in one program, the learning rate traced; devices unset: all 4
        ("grid", "all", [[1, 4, 2]] * 2, [[4, 1, 2]] * 2),
    ],
)
def test_models_spread_over_four_devices_follow_one_device(
    four_device_runs, case, many, spread_on_one, spread_on_many
):
    one, spread = four_device_runs[f"{case}-1"], four_device_runs[f"{case}-{many}"]
    assert one.keys() == spread.keys()
    cells = range(len(spread_on_one))
    # (num_devices, models_per_device, trained_with): read from the trained state's shards
    assert [one[f"{i}/spread"].tolist() for i in cells] == spread_on_one
    assert [spread[f"{i}/spread"].tolist() for i in cells] == spread_on_many
    for name in (name for name in one if not name.endswith("/spread")):
        if name.endswith("/histories"):  # the same accuracies; losses to float tolerance
            np.testing.assert_array_equal(one[name][..., :2], spread[name][..., :2])
        # XLA compiles a partitioned program by other passes (the optimizer's divisions
        # become other roundings), so the bits may differ
        np.testing.assert_allclose(one[name], spread[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("run", [sweep, lambda config, seeds: grid(config, {}, seeds)])
def test_sweeps_and_grids_refuse_several_processes(tiny_config, monkeypatch, run):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(DeviceError, match="sweeps and grids run in a single process"):
        run(tiny_config, [1])


def test_a_sweep_refuses_more_devices_than_there_are(tiny_config):
    count = len(jax.devices())
    with pytest.raises(DeviceError, match=f"devices is {count + 1}, but only {count}"):
        sweep(tiny_config.replace(devices=count + 1), [1])


def test_a_cnn_sweep_and_grid_record_the_form_they_took(data_dir, tmp_path):
    config = tiny(data_dir, model="cnn", cnn_channels=(2, 4), cnn_dense=8, num_epochs=1)
    form = "winograd" if jax.default_backend() == "cpu" else "native"  # `auto` there
    sweep(config, [1], str(tmp_path / "sweep"))
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["config"]["cnn_form"] == form
    (cell,) = grid(config, {"learning_rate": [0.01]}, [1])
    assert cell.config.cnn_form == form
