"""Grids: every cell with every seed, linked axes, cells that differ only in traced settings as one
compiled program, each cell equal to its own run, bad grids refused first."""

import json

import numpy as np
import pytest

from mnist_jax import Config, ConfigError
from mnist_jax.cli import _grid_axes, main
from mnist_jax.runtime.compilation import Compilations
from mnist_jax.sweep import grid, grid_configs, program_key, sweep, traced_settings
from tests.helpers import TINY_FLAGS, assert_models_equal_their_runs


def assert_cell_equals_its_runs(cell, config, seeds):
    assert_models_equal_their_runs(cell, config, seeds, rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_a_grid_over_traced_settings_compiles_once_and_each_cell_equals_its_own_run(tiny_config):
    config = tiny_config.replace(schedule="cosine", clip_norm=5.0)
    axes = {
        "learning_rate": [0.001, 0.003],
        ("dropout", "label_smoothing", "weight_decay"): [(0.1, 0.05, 0.01), (0.3, 0.1, 0.1)],
    }
    seeds = [3, 4]
    with Compilations() as compiled:
        cells = grid(config, axes, seeds)
    # One program each to initialize, train an epoch and evaluate, for all 4 cells x 2 seeds.
    assert compiled.programs == 3
    assert {cell.trained_with for cell in cells} == {4}
    finals = {float(cell.histories[0, -1, 2]) for cell in cells}
    assert len(finals) == 4  # the cells really differ
    for cell in (cells[0], cells[3]):
        assert_cell_equals_its_runs(cell, cell.config, seeds)


def test_settings_that_change_the_program_compile_apart(tiny_config):
    config = tiny_config.replace(num_epochs=1)
    axes = {
        "layer_sizes": [(784, 16, 10), (784, 8, 10)],
        "learning_rate": [0.001, 0.01],
        "weight_decay": [0.0, 0.01],
    }
    with Compilations() as compiled:
        cells = grid(config, axes, [1])
    # Two widths times decay off or on: four programs of three compilations each, two cells apiece.
    assert compiled.programs == 4 * 3
    assert [cell.trained_with for cell in cells] == [2] * 8
    assert [cell.config.learning_rate for cell in cells] == [
        0.001,
        0.001,
        0.01,
        0.01,
    ] * 2  # the grid's order
    assert_cell_equals_its_runs(cells[7], cells[7].config, [1])


@pytest.mark.parametrize("schedule", ["warmup_cosine", "onecycle", "linear"])
def test_a_traced_learning_rate_follows_every_schedule(tiny_config, schedule):
    # optax's warmup schedules branch on their peak: a traced rate must still shape them.
    config = tiny_config.replace(schedule=schedule, warmup_epochs=1 if schedule != "linear" else 0)
    cells = grid(config, {"learning_rate": [0.001, 0.003]}, [5])
    assert cells[0].trained_with == 2
    assert_cell_equals_its_runs(cells[1], cells[1].config, [5])


def test_which_settings_are_traced():
    config = Config(learning_rate=0.01, weight_decay=0.0, dropout=0.2, clip_norm=None)
    assert traced_settings(config) == ("learning_rate", "b1", "b2", "eps", "dropout")
    assert traced_settings(config.replace(optimizer="tests.custom_models:nesterov")) == (
        "dropout",
    )
    assert program_key(config) == program_key(
        config.replace(learning_rate=0.5, dropout=0.4, seed=7)
    )
    # decay on: another chain
    assert program_key(config) != program_key(config.replace(weight_decay=0.1))
    assert program_key(config) != program_key(config.replace(batch_size=64))


def test_grid_runs_every_cell_with_every_seed(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert (
        main(
            [
                "sweep",
                "--seeds",
                "2",
                *TINY_FLAGS,
                "--epochs",
                "1",
                "--data-dir",
                data_dir,
                "--out",
                str(out),
                "--grid",
                "lr",
                "0.01",
                "0.03",
                "--grid",
                "activation",
                "tanh",
                "relu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    saved = json.loads((out / "grid.json").read_text())
    assert saved["axes"] == {"learning_rate": [0.01, 0.03], "activation": ["tanh", "relu"]}
    assert [c["settings"] for c in saved["cells"]] == [
        {"learning_rate": lr, "activation": a} for lr in (0.01, 0.03) for a in ("tanh", "relu")
    ]
    for cell in saved["cells"]:
        settings = cell["settings"]
        assert (
            f"learning_rate={settings['learning_rate']} activation={settings['activation']}"
            in printed
        )
        config = Config.from_dict(cell["config"])
        assert (config.learning_rate, config.activation) == tuple(cell["settings"].values())
        alone = sweep(config, [42, 43])  # the cell equals a sweep of its own config
        np.testing.assert_allclose(
            [cell["per_seed"][s][-1]["test_accuracy"] for s in ("42", "43")],
            alone.histories[:, -1, 1],
            atol=1e-12,
        )


@pytest.mark.parametrize(
    "grid, message",
    [
        (["nope", "1"], "'nope' is not a setting"),
        (["batch_size", "32", "x"], "invalid literal"),
        (["activation", "tanh", "cosh"], "activation must be one of"),
    ],
)
def test_bad_grids_are_refused_before_any_work(data_dir, tmp_path, capsys, grid, message):
    assert (
        main(
            [
                "sweep",
                "--seeds",
                "2",
                *TINY_FLAGS,
                "--data-dir",
                data_dir,
                "--out",
                str(tmp_path),
                "--grid",
                *grid,
            ]
        )
        == 2
    )
    assert message in capsys.readouterr().err
    assert not (tmp_path / "grid.json").exists()


def test_linked_grid_axes_set_their_settings_together(data_dir, tmp_path, capsys):
    axes = _grid_axes(
        [["optimizer/lr/momentum", "adam/0.01/none", "sgd/0.1/0.9"], ["dropout", "0", "0.5"]]
    )
    assert axes == {
        ("optimizer", "learning_rate", "momentum"): [("adam", 0.01, None), ("sgd", 0.1, 0.9)],
        "dropout": [0.0, 0.5],
    }
    cells = [settings for settings, _ in grid_configs(Config(), axes)]
    assert cells == [
        {"optimizer": o, "learning_rate": lr, "momentum": m, "dropout": d}
        for o, lr, m in axes[("optimizer", "learning_rate", "momentum")]
        for d in (0.0, 0.5)
    ]
    flags = [
        *TINY_FLAGS,
        "--epochs",
        "1",
        "--data-dir",
        data_dir,
        "--seeds",
        "2",
        "--loss-reduction",
        "mean",
    ]
    out = tmp_path / "grid"
    assert (
        main(
            [
                "sweep",
                *flags,
                "--grid",
                "optimizer/lr/momentum",
                "adam/0.01/none",
                "sgd/0.1/0.9",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = json.loads((out / "grid.json").read_text())
    assert saved["axes"] == {
        "optimizer/learning_rate/momentum": [["adam", 0.01, None], ["sgd", 0.1, 0.9]]
    }
    assert [
        (c["config"]["optimizer"], c["config"]["learning_rate"], c["config"]["momentum"])
        for c in saved["cells"]
    ] == [("adam", 0.01, None), ("sgd", 0.1, 0.9)]
    with pytest.raises(ConfigError, match="gives 2 values for 3 settings"):
        _grid_axes([["optimizer/lr/momentum", "adam/0.01"]])


@pytest.mark.parametrize(
    "base, axes",
    [
        (
            dict(dropout=0.1),
            {
                ("input_dropout", "b1", "b2", "eps"): [
                    (0.1, 0.8, 0.9, 1e-7),
                    (0.2, 0.85, 0.6, 1e-6),
                ]
            },
        ),
        (dict(optimizer="sgd", learning_rate=0.05), {"momentum": [0.5, 0.9]}),
        (dict(), {"l2": [0.01, 0.3]}),
    ],
    ids=["input_dropout-b1-b2-eps", "momentum", "l2"],
)
def test_the_other_traced_settings_vary_per_model_and_each_cell_equals_its_run(
    tiny_config, base, axes
):
    config = tiny_config.replace(num_epochs=1, **base)
    cells = grid(config, axes, [3])
    assert [cell.trained_with for cell in cells] == [2, 2]  # one program for both cells
    # the values reached the models
    assert cells[0].histories[0, -1, 2] != cells[1].histories[0, -1, 2]
    for cell in cells:
        assert_cell_equals_its_runs(cell, cell.config, [3])
