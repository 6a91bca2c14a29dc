"""Seed sweeps and grids: many models, seeds and grid cells alike, trained as one vmapped compiled
program, the models spread over the process's devices."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax import data
from mnist_jax.config import TRACEABLE, Config, is_on, optimizer_by_name
from mnist_jax.errors import ConfigError
from mnist_jax.models import BUILT_IN, Model, ModelState, Params, as_run
from mnist_jax.pipelines import compile_timed, epoch_program, evaluation_program, shard_splits
from mnist_jax.records import SPLITS, metric_names
from mnist_jax.runs.events import TrainingEvents, stream_name
from mnist_jax.runs.rundir import TENSORBOARD
from mnist_jax.runs.storage import write_json
from mnist_jax.runtime import memory, parallel
from mnist_jax.runtime.compilation import Compilations
from mnist_jax.runtime.determinism import make_deterministic
from mnist_jax.runtime.environment import environment
from mnist_jax.stats import statistics
from mnist_jax.steps import make_steps, precision, recorded, split_metrics


@dataclass
class SweepResult:
    """Every seed's history (rows: epochs; columns: `metrics`), final parameters and statistics."""

    config: Config
    seeds: list[int]
    metrics: tuple[str, ...]
    histories: np.ndarray  # (seeds, epochs + 1, len(metrics))
    params: Params  # every leaf has a leading seed axis
    seconds: (
        float  # training and evaluation; cells trained together share their program's time evenly
    )
    environment: dict
    compile_seconds: float = 0.0  # compiling its programs (shared the same way)
    trained_with: int = 1  # grid cells in its compiled program, itself included
    model_state: ModelState = ()  # a leading seed axis on every leaf; `()` for no state
    # the models of its program on each device, read from the trained state's shards (the
    # device count is the environment's `num_devices`)
    models_per_device: int = 1

    def statistics(self) -> list[dict]:
        """Per epoch, the statistics of each metric over the seeds."""
        return [
            {
                "epoch": epoch,
                **{
                    name: statistics(self.histories[:, epoch, i])
                    for i, name in enumerate(self.metrics)
                },
            }
            for epoch in range(self.histories.shape[1])
        ]

    def best(self) -> dict | None:
        """Each seed's best epoch by validation accuracy (None without a validation split), and
        the statistics of the test accuracy there: early stopping, chosen without the test set."""
        if "validation_accuracy" not in self.metrics:
            return None
        validation, test = (
            self.histories[:, :, self.metrics.index(f"{split}_accuracy")]
            for split in ("validation", "test")
        )
        epochs = np.argmax(validation, axis=1)  # the earliest of equals, as for a run
        return {
            "epochs": epochs.tolist(),
            "test_accuracy": statistics(test[np.arange(len(self.seeds)), epochs]),
        }

    def summary(self) -> dict:
        best = self.best()
        return {
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "statistics": self.statistics(),
            **({"best": best} if best else {}),
            "per_seed": {
                str(seed): [
                    dict(zip(("epoch", *self.metrics), (epoch, *map(float, row)), strict=True))
                    for epoch, row in enumerate(history)
                ]
                for seed, history in zip(self.seeds, self.histories, strict=True)
            },
            "seconds": self.seconds,
            "compile_seconds": self.compile_seconds,
            "trained_with": self.trained_with,
            "models_per_device": self.models_per_device,
            **self.environment,
        }


def traced_settings(
    config: Config,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> tuple[str, ...]:
    """The settings a grid passes to its compiled program as traced values, one per model: those in
    use (`is_on`) among label smoothing, the optimizer's (when built by name: a factory or object
    reads its own), the dropout rates (of a built-in model) and the augmentation's strengths.
    Cells that differ only in these, and in seeds, train as one program; any other difference
    compiles apart."""
    names = {"label_smoothing", "l2", "augment_shift", "augment_rotation", "augment_scale"}
    if optimizer is None and optimizer_by_name(config):
        names |= {"learning_rate", "b1", "b2", "eps", "momentum", "weight_decay", "clip_norm"}
    if model is None and config.model in BUILT_IN:
        names |= {"dropout", "input_dropout"}
    return tuple(name for name in TRACEABLE if name in names and is_on(getattr(config, name)))


def program_key(
    config: Config,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> str:
    """What a cell's compiled program depends on: every setting but the seed and the traced
    values."""
    traced = traced_settings(config, model, optimizer)
    return json.dumps(
        {
            name: "traced" if name in traced else value
            for name, value in config.to_dict().items()
            if name != "seed"
        },
        sort_keys=True,
    )


def _check_fits(config: Config, devices: list, num_models: int, steps) -> None:
    """Raises ConfigError unless `num_models` models of `config` spread over `devices` fit in a
    device's memory: its share of the models, and the whole data, which every device holds."""
    memory.check_fits(
        config,
        parallel.model_mesh(1, devices),
        num_models=parallel.spread(num_models, len(devices)).per_device,
        steps=steps,
    )


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    """`values` with copies of its last entry appended along the leading axis up to `length`."""
    return np.concatenate([values, np.repeat(values[-1:], length - len(values), axis=0)])


def _on_models(function: Callable, sharding) -> Callable:
    """`function` with every output, one entry per model along its leading axis, kept split
    across the devices that way (the next epoch's input must lie as the last one's did)."""
    return lambda *args: jax.lax.with_sharding_constraint(function(*args), sharding)


def _train_together(
    configs: Sequence[Config],
    seeds: Sequence[int],
    shares: dict[str, data.Share],
    devices: list,
    model: Model | None,
    optimizer: optax.GradientTransformation | None,
    events_dir: str | None = None,
    cells: Sequence[dict] = ({},),
    on_epoch: Callable[[int, int], None] = lambda epoch, num_epochs: None,
) -> list[SweepResult]:
    """Every (config, seed) pair as one model of a single vmapped program; the configs share one
    `program_key`, their traced settings entering as one value per model. One result per config.
    The models are split across `devices` (`parallel.spread`; spare places train copies of the
    last model, dropped), every device holding the whole data. With `events_dir`, TensorBoard
    events for each model in `events_dir/<cell settings>/seed-N`."""
    base = configs[0]
    num_models = len(configs) * len(seeds)
    mesh = parallel.model_mesh(num_models, devices)
    places = parallel.spread(num_models, len(devices)).models
    on_models = parallel.model_sharding(mesh)
    train_size = shares["train"].total
    # init and evaluation use no traced value
    steps = make_steps(base, model, optimizer, train_size=train_size)
    # One config (a plain sweep) keeps its settings as constants, exactly as its runs do.
    traced = traced_settings(base, model, optimizer) if len(configs) > 1 else ()
    with precision(base):
        dtype = jnp.dtype(base.dtype)
        values = {
            name: np.asarray([getattr(c, name) for c in configs for _ in seeds], dtype)
            for name in traced
        }
        seed_array = np.asarray([seed for _ in configs for seed in seeds], np.uint32)
        seed_array, values = jax.device_put(
            jax.tree.map(lambda v: _padded(v, places), (seed_array, values)), on_models
        )

        def train_epoch(state, split, epoch, seed, cell_values):
            cell_steps = make_steps(
                base, model, optimizer, train_size, hyperparameters=cell_values
            )
            return epoch_program(base, cell_steps, mesh)(state, split, epoch, seed)

        splits = shard_splits(base, shares, mesh)
        state = jax.jit(jax.vmap(steps.init), out_shardings=on_models)(seed_array)
        per_model = functools.partial(jax.vmap, spmd_axis_name=parallel.MODEL_AXIS)
        epoch_fn, train_seconds = compile_timed(
            _on_models(per_model(train_epoch, in_axes=(0, None, None, 0, 0)), on_models),
            state,
            splits["train"],
            np.int32(0),
            seed_array,
            values,
            donate_argnums=(0,),
        )
        eval_fn, eval_seconds = compile_timed(
            _on_models(
                per_model(evaluation_program(base, steps, mesh), in_axes=(0, None)), on_models
            ),
            state.variables,
            splits,
        )
        metrics = metric_names([split for split in SPLITS if split in shares])

        def evaluate(variables) -> np.ndarray:
            scores = {}
            for name, totals in eval_fn(variables, splits).items():
                scores.update(split_metrics(name, *totals, shares[name].total))
            return np.stack([scores[metric] for metric in metrics], axis=1)[:num_models]

        def by_model(scores: np.ndarray) -> list[dict]:
            return [dict(zip(metrics, row, strict=True)) for row in scores]

        events = None
        if events_dir:
            events = TrainingEvents(
                events_dir,
                [stream_name(cell, seed) for cell in cells for seed in seeds],
                [config for config in configs for _ in seeds],
                train_size,
            )
        with events or contextlib.nullcontext():
            start = time.perf_counter()
            history = [evaluate(state.variables)]
            if events:
                events.metrics(0, by_model(history[0]))
            for epoch in range(1, base.num_epochs + 1):
                epoch_start = time.perf_counter()
                state, losses = epoch_fn(
                    state, splits["train"], np.int32(epoch), seed_array, values
                )
                if events:
                    # waits for the epoch, to time it apart from evaluation
                    losses = np.asarray(losses)[:num_models]
                    epoch_seconds = time.perf_counter() - epoch_start
                history.append(evaluate(state.variables))
                on_epoch(epoch, base.num_epochs)
                if events:
                    events.steps(epoch, 0, losses)
                    events.metrics(epoch, by_model(history[-1]), epoch_seconds)
            seconds = time.perf_counter() - start
    histories, env, n = np.stack(history, axis=1), environment(mesh), len(seeds)
    share = 1 / len(configs)  # the cells trained together split the program's time evenly
    per_device = jax.tree.leaves(state.params)[0].addressable_shards[0].data.shape[0]
    params, model_state = jax.tree.map(
        lambda leaf: np.asarray(leaf)[:num_models], (state.params, state.model_state)
    )
    return [
        SweepResult(
            config,
            list(seeds),
            metrics,
            histories[rows],
            jax.tree.map(lambda leaf, rows=rows: leaf[rows], params),
            seconds * share,
            env,
            compile_seconds=(train_seconds + eval_seconds) * share,
            trained_with=len(configs),
            model_state=jax.tree.map(lambda leaf, rows=rows: leaf[rows], model_state),
            models_per_device=per_device,
        )
        for config, rows in zip(
            configs, (slice(i * n, (i + 1) * n) for i in range(len(configs))), strict=True
        )
    ]


def sweep(
    config: Config,
    seeds: Sequence[int],
    out_dir: str | None = None,
    shares: dict[str, data.Share] | None = None,
    *,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
    tensorboard: bool = False,
    on_epoch: Callable[[int, int], None] = lambda epoch, num_epochs: None,
) -> SweepResult:
    """Trains one model per seed (initialization, shuffles and step keys all seeded) as a single
    vmapped program per epoch, the models split across the first `config.devices` devices
    (default: all) of this process (`parallel.spread`); each model matches a separate run with
    that seed.

    Writes `out_dir/sweep.json` if given (and, with `tensorboard`, event files in
    `out_dir/tensorboard/seed-N`). `shares` (from `data.load`) skips reading the data;
    `model` and `optimizer` objects replace the config's, as in `train`.
    `on_epoch(epoch, num_epochs)` is called as each epoch ends (for progress).
    """
    config = recorded(config, model, optimizer)
    if config.deterministic:
        make_deterministic()
    events_dir = _events_dir(out_dir, tensorboard)
    with Compilations() as compilations:
        devices = parallel.population_devices(config.devices, config.platform)
        config = as_run(config, devices[0].platform)  # the CNN's form, as it runs
        _check_fits(config, devices, len(seeds), make_steps(config, model, optimizer))
        shares = shares or data.load(config.data_dir, config.validation_size)
        (result,) = _train_together(
            [config], seeds, shares, devices, model, optimizer, events_dir, on_epoch=on_epoch
        )
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(
            os.path.join(out_dir, "sweep.json"), {**result.summary(), **_compiled(compilations)}
        )
    return result


def _events_dir(out_dir: str | None, tensorboard: bool) -> str | None:
    if tensorboard and not out_dir:
        raise ConfigError("TensorBoard's event files go in the sweep's folder: give it (--out)")
    if not tensorboard:
        return None
    # a sweep replaces its folder's last one
    shutil.rmtree(os.path.join(out_dir, TENSORBOARD), ignore_errors=True)
    return os.path.join(out_dir, TENSORBOARD)


def _compiled(compilations: Compilations) -> dict:
    return {
        "compilations": compilations.programs,
        "compilations_from_cache": compilations.from_cache,
        "compile_seconds": compilations.seconds,
    }


# setting name -> values; or a tuple of names -> tuples of their values, varied together
Axes = dict


def grid_configs(config: Config, axes: Axes) -> list[tuple[dict, Config]]:
    """Every combination of the axes' values applied to `config`, each validated. An axis named
    by a tuple of settings, `("optimizer", "learning_rate"): [("adam", 1e-3), ("sgd", 0.1)]`,
    sets them together."""
    cells = []
    for values in itertools.product(*axes.values()):
        cell = {}
        for name, value in zip(axes, values, strict=True):
            cell.update(
                zip(name, value, strict=True) if isinstance(name, tuple) else {name: value}
            )
        cells.append(cell)
    return [(cell, config.replace(**cell)) for cell in cells]


def _axes_record(axes: Axes) -> dict[str, list]:
    """The axes as JSON: a tuple of names joined by `/`."""
    return {
        "/".join(name) if isinstance(name, tuple) else name: [
            list(v) if isinstance(v, tuple) else v for v in values
        ]
        for name, values in axes.items()
    }


def grid(
    config: Config,
    axes: Axes,
    seeds: Sequence[int],
    out_dir: str | None = None,
    on_cell: Callable[[dict, SweepResult], None] = lambda settings, result: None,
    *,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
    tensorboard: bool = False,
    on_epoch: Callable[[int, int], None] = lambda epoch, num_epochs: None,
) -> list[SweepResult]:
    """A seed sweep in every cell of the grid `axes` (setting name -> values; see `grid_configs`)
    over `config`.

    Every cell is validated before any is trained. Cells that differ only in traced settings
    (`traced_settings`: learning rate, the optimizer's other numbers, weight decay, clipping,
    dropout, label smoothing) train together, all their seeds one vmapped program (as many as
    fit in memory at a time); other settings (widths, batch size, the model...) compile once per
    distinct program. A program's models are split across the first `devices` devices of this
    process, as in `sweep`. Each model still equals its own `train` run. `on_cell` is called in the
    grid's order as cells finish; `out_dir/grid.json` (if given) is rewritten as they do; with
    `tensorboard`, event files go in `out_dir/tensorboard/<cell settings>/seed-N`; `on_epoch(epoch,
    num_epochs)` is called as each epoch of each compiled program ends.
    """
    varied = {name for axis in axes for name in (axis if isinstance(axis, tuple) else (axis,))}
    given = [
        name
        for name, obj in (("model", model), ("optimizer", optimizer))
        if obj is not None and name in varied
    ]
    if given:
        raise ConfigError(f"the grid varies {', '.join(given)}, which is also given as an object")
    cells = grid_configs(recorded(config, model, optimizer), axes)
    if any(cell.deterministic for _, cell in cells):
        make_deterministic()  # before anything below starts JAX's backends
    devices = [parallel.population_devices(cell.devices, cell.platform) for _, cell in cells]
    cells = [  # the CNN's form, as it runs
        (settings, as_run(cell, cell_devices[0].platform))
        for (settings, cell), cell_devices in zip(cells, devices, strict=True)
    ]
    events_dir = _events_dir(out_dir, tensorboard)
    groups: dict[tuple, list[int]] = {}
    steps = [make_steps(cell_config, model, optimizer) for _, cell_config in cells]
    for index, (_, cell_config) in enumerate(cells):
        _check_fits(cell_config, devices[index], len(seeds), steps[index])
        key = (
            program_key(cell_config, model, optimizer),
            cell_config.validation_size,
            cell_config.data_dir,
        )
        groups.setdefault(key, []).append(index)
    results: dict[int, SweepResult] = {}
    reported = 0  # cells passed to on_cell, in the grid's order
    with Compilations() as compilations:
        for (_, validation_size, data_dir), indices in groups.items():
            shares = data.load(data_dir, validation_size)
            group_devices = devices[indices[0]]
            # models a device holds; the program holds that many on each device
            fit = memory.models_that_fit(
                cells[indices[0]][1], parallel.model_mesh(1, group_devices), steps[indices[0]]
            )
            per_program = (
                len(indices)
                if fit is None
                else max(1, min(len(indices), fit * len(group_devices) // len(seeds)))
            )
            for part in range(0, len(indices), per_program):
                chunk = indices[part : part + per_program]
                trained = _train_together(
                    [cells[i][1] for i in chunk],
                    seeds,
                    shares,
                    group_devices,
                    model,
                    optimizer,
                    events_dir,
                    [cells[i][0] for i in chunk],
                    on_epoch,
                )
                results.update(zip(chunk, trained, strict=True))
                while reported in results:
                    on_cell(cells[reported][0], results[reported])
                    reported += 1
                if out_dir:
                    _write_grid(out_dir, cells, results, axes, seeds, compilations)
    return [results[i] for i in range(len(cells))]


def _write_grid(
    out_dir: str,
    cells,
    results: dict[int, SweepResult],
    axes: Axes,
    seeds: Sequence[int],
    compilations: Compilations,
) -> None:
    """grid.json: the axes, the seeds, what was compiled, and every finished cell in the grid's
    order."""
    summary = {
        "axes": _axes_record(axes),
        "seeds": list(seeds),
        **_compiled(compilations),
        "cells": [
            {"settings": settings, **results[i].summary()}
            for i, (settings, _) in enumerate(cells)
            if i in results
        ],
    }
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "grid.json"), summary)
