"""Grids as one compiled program: traced settings vary per model, each cell equals its own run."""

import pytest

from mnist_jax import Config
from mnist_jax.compilation import Compilations
from mnist_jax.sweep import grid, program_key, traced_settings
from tests.conftest import assert_models_equal_their_runs

SMALL = dict(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=2, eval_batch_size=62)


def assert_cell_equals_its_runs(cell, config, seeds):
    assert_models_equal_their_runs(cell, config, seeds, rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_a_grid_over_traced_settings_compiles_once_and_each_cell_equals_its_own_run(data_dir):
    config = Config(**SMALL, data_dir=data_dir, schedule="cosine", clip_norm=5.0)
    axes = {"learning_rate": [0.001, 0.003], ("dropout", "label_smoothing", "weight_decay"): [(0.1, 0.05, 0.01),
                                                                                          (0.3, 0.1, 0.1)]}
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


def test_settings_that_change_the_program_compile_apart(data_dir):
    config = Config(**(SMALL | {"num_epochs": 1}), data_dir=data_dir)
    axes = {"layer_sizes": [(784, 16, 10), (784, 8, 10)], "learning_rate": [0.001, 0.01],
            "weight_decay": [0.0, 0.01]}
    with Compilations() as compiled:
        cells = grid(config, axes, [1])
    # Two widths times decay off or on: four programs of three compilations each, two cells apiece.
    assert compiled.programs == 4 * 3
    assert [cell.trained_with for cell in cells] == [2] * 8
    assert [cell.config.learning_rate for cell in cells] == [0.001, 0.001, 0.01, 0.01] * 2  # the grid's order
    assert_cell_equals_its_runs(cells[7], cells[7].config, [1])


@pytest.mark.parametrize("schedule", ["warmup_cosine", "onecycle", "linear"])
def test_a_traced_learning_rate_follows_every_schedule(data_dir, schedule):
    # optax's warmup schedules branch on their peak: a traced rate must still shape them.
    config = Config(**SMALL, data_dir=data_dir, schedule=schedule, warmup_epochs=1 if schedule != "linear" else 0)
    cells = grid(config, {"learning_rate": [0.001, 0.003]}, [5])
    assert cells[0].trained_with == 2
    assert_cell_equals_its_runs(cells[1], cells[1].config, [5])


def test_which_settings_are_traced():
    config = Config(learning_rate=0.01, weight_decay=0.0, dropout=0.2, clip_norm=None)
    assert traced_settings(config) == ("learning_rate", "b1", "b2", "eps", "dropout")
    assert traced_settings(config.replace(optimizer="tests.custom_models:nesterov")) == ("dropout",)
    assert program_key(config) == program_key(config.replace(learning_rate=0.5, dropout=0.4, seed=7))
    assert program_key(config) != program_key(config.replace(weight_decay=0.1))  # decay on: another chain
    assert program_key(config) != program_key(config.replace(batch_size=64))
