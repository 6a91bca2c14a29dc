"""Seed sweeps: independently seeded models trained together as one vmapped, compiled program."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax import data, memory, parallel
from mnist_jax.config import Config, ConfigError
from mnist_jax.environment import environment
from mnist_jax.model import Params
from mnist_jax.models import Model
from mnist_jax.pipelines import epoch_program, evaluation_program, shard_splits
from mnist_jax.results import SPLITS, metric_names
from mnist_jax.stats import statistics
from mnist_jax.steps import make_steps, precision, recorded, split_metrics
from mnist_jax.storage import write_json


@dataclass
class SweepResult:
    """Every seed's history (rows: epochs; columns: `metrics`), final parameters and statistics."""

    config: Config
    seeds: list[int]
    metrics: tuple[str, ...]
    histories: np.ndarray  # (seeds, epochs + 1, len(metrics))
    params: Params  # every leaf has a leading seed axis
    seconds: float
    environment: dict

    def statistics(self) -> list[dict]:
        """Per epoch, the statistics of each metric over the seeds."""
        return [{"epoch": epoch, **{name: statistics(self.histories[:, epoch, i])
                                    for i, name in enumerate(self.metrics)}}
                for epoch in range(self.histories.shape[1])]

    def best(self) -> dict | None:
        """Each seed's best epoch by validation accuracy (None without a validation split), and
        the statistics of the test accuracy there: early stopping, chosen without the test set."""
        if "validation_accuracy" not in self.metrics:
            return None
        validation, test = (self.histories[:, :, self.metrics.index(f"{split}_accuracy")]
                            for split in ("validation", "test"))
        epochs = np.argmax(validation, axis=1)  # the earliest of equals, as for a run
        return {"epochs": epochs.tolist(),
                "test_accuracy": statistics(test[np.arange(len(self.seeds)), epochs])}

    def summary(self) -> dict:
        best = self.best()
        return {"config": self.config.to_dict(), "seeds": self.seeds, "statistics": self.statistics(),
                **({"best": best} if best else {}),
                "per_seed": {str(seed): [dict(zip(("epoch", *self.metrics), (epoch, *map(float, row))))
                                         for epoch, row in enumerate(history)]
                             for seed, history in zip(self.seeds, self.histories)},
                "seconds": self.seconds, **self.environment}


def sweep(config: Config, seeds: Sequence[int], out_dir: str | None = None,
          shares: dict[str, data.Share] | None = None, *, model: Model | None = None,
          optimizer: optax.GradientTransformation | None = None) -> SweepResult:
    """Trains one model per seed (initialization, shuffles and step keys all seeded) on one
    device, as a single vmapped program per epoch; each model matches a separate run with that seed.

    Writes `out_dir/sweep.json` if given. `shares` (from `data.load_shares`) skips reading the
    data; `model` and `optimizer` objects replace the config's, as in `train`.
    """
    config = recorded(config, model, optimizer)
    shares = shares or data.load_shares(config.validation_size, config.data_dir)
    steps = make_steps(config, model, optimizer, train_size=shares["train"].total)
    mesh = parallel.make_mesh(1, config.platform)
    memory.check_fits(config, mesh, num_models=len(seeds), steps=steps)
    with precision(config):
        splits = shard_splits(config, shares, mesh)
        state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[steps.init(seed) for seed in seeds])
        seed_array = jnp.asarray(seeds, jnp.uint32)
        metrics = metric_names([split for split in SPLITS if split in shares])
        epoch_fn = jax.jit(jax.vmap(epoch_program(config, steps, mesh), in_axes=(0, None, None, 0)),
                           donate_argnums=0)
        eval_fn = jax.jit(jax.vmap(evaluation_program(config, steps, mesh), in_axes=(0, None)))

        def evaluate(params) -> np.ndarray:
            scores = {}
            for name, split in splits.items():
                scores.update(split_metrics(name, *eval_fn(params, split), shares[name].total))
            return np.stack([scores[metric] for metric in metrics], axis=1)

        start = time.perf_counter()
        history = [evaluate(state.params)]
        for epoch in range(1, config.num_epochs + 1):
            state, _ = epoch_fn(state, splits["train"], jnp.int32(epoch), seed_array)
            history.append(evaluate(state.params))
        seconds = time.perf_counter() - start
    result = SweepResult(config, list(seeds), metrics, np.stack(history, axis=1), state.params, seconds,
                         environment(mesh))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "sweep.json"), result.summary())
    return result


Axes = dict  # setting name -> values; or a tuple of names -> tuples of their values, varied together


def grid_configs(config: Config, axes: Axes) -> list[tuple[dict, Config]]:
    """Every combination of the axes' values applied to `config`, each validated. An axis named
    by a tuple of settings, `("optimizer", "learning_rate"): [("adam", 1e-3), ("sgd", 0.1)]`,
    sets them together."""
    cells = []
    for values in itertools.product(*axes.values()):
        cell = {}
        for name, value in zip(axes, values):
            cell.update(zip(name, value, strict=True) if isinstance(name, tuple) else {name: value})
        cells.append(cell)
    return [(cell, config.replace(**cell)) for cell in cells]


def _axes_record(axes: Axes) -> dict[str, list]:
    """The axes as JSON: a tuple of names joined by `/`."""
    return {"/".join(name) if isinstance(name, tuple) else name: [list(v) if isinstance(v, tuple) else v
                                                                  for v in values]
            for name, values in axes.items()}


def grid(config: Config, axes: Axes, seeds: Sequence[int], out_dir: str | None = None,
         on_cell: Callable[[dict, SweepResult], None] = lambda settings, result: None, *,
         model: Model | None = None, optimizer: optax.GradientTransformation | None = None) -> list[SweepResult]:
    """A seed sweep in every cell of the grid `axes` (setting name -> values; see `grid_configs`) over `config`.

    Every cell is validated before any is trained. Writes `out_dir/grid.json` if given,
    rewritten as each cell finishes.
    """
    varied = {name for axis in axes for name in (axis if isinstance(axis, tuple) else (axis,))}
    given = [name for name, obj in (("model", model), ("optimizer", optimizer)) if obj is not None and name in varied]
    if given:
        raise ConfigError(f"the grid varies {', '.join(given)}, which is also given as an object")
    cells = grid_configs(recorded(config, model, optimizer), axes)
    mesh = parallel.make_mesh(1, config.platform)
    for _, cell_config in cells:
        memory.check_fits(cell_config, mesh, num_models=len(seeds), steps=make_steps(cell_config, model, optimizer))
    results, shares = [], {}
    for settings, cell_config in cells:
        data_key = (cell_config.validation_size, cell_config.data_dir)
        if data_key not in shares:
            shares[data_key] = data.load_shares(*data_key)
        results.append(sweep(cell_config, seeds, shares=shares[data_key], model=model, optimizer=optimizer))
        on_cell(settings, results[-1])
        if out_dir:
            summary = {"axes": _axes_record(axes), "seeds": list(seeds),
                       "cells": [{"settings": s, **r.summary()} for (s, _), r in zip(cells, results)]}
            os.makedirs(out_dir, exist_ok=True)
            write_json(os.path.join(out_dir, "grid.json"), summary)
    return results
