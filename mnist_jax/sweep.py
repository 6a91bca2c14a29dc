"""Seed sweeps: independently seeded models trained together as one vmapped, compiled program."""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from mnist_jax import data, memory, parallel
from mnist_jax.config import Config
from mnist_jax.model import Params
from mnist_jax.pipelines import place_splits, scan_epoch, scan_eval
from mnist_jax.results import environment, write_atomic
from mnist_jax.steps import init_state
from mnist_jax.training import precision


def metric_names(splits: Sequence[str]) -> tuple[str, ...]:
    """The history columns for `splits`: every accuracy, then every mean loss."""
    return tuple(f"{split}_{kind}" for kind in ("accuracy", "loss") for split in splits)


def statistics(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the half-width of the 95% t confidence interval."""
    values = np.asarray(values, np.float64)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half_width = float(scipy.stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std, "ci95": half_width, "n": n}


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
        return [{"epoch": epoch, **{name: statistics(self.histories[:, epoch, i]) for i, name in enumerate(self.metrics)}}
                for epoch in range(self.histories.shape[1])]

    def summary(self) -> dict:
        return {"config": self.config.to_dict(), "seeds": self.seeds, "statistics": self.statistics(),
                "per_seed": {str(seed): [dict(zip(("epoch", *self.metrics), (epoch, *map(float, row))))
                                         for epoch, row in enumerate(history)]
                             for seed, history in zip(self.seeds, self.histories)},
                "seconds": self.seconds, **self.environment}


def sweep(config: Config, seeds: Sequence[int], out_dir: str | None = None,
          shares: dict[str, data.Share] | None = None) -> SweepResult:
    """Trains one model per seed (initialization and shuffles both seeded) on one device, as
    a single vmapped program per epoch; each model matches a separate run with that seed.

    Writes `out_dir/sweep.json` if given. `shares` (from `data.load_shares`) skips reading the data.
    """
    mesh = parallel.make_mesh(1, config.platform)
    memory.check_fits(config, mesh, num_models=len(seeds))
    rows = parallel.rows_per_batch(config.batch_size, mesh)
    eval_rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
    with precision(config):
        shares = shares or data.load_shares(config.validation_size, config.data_dir)
        splits = place_splits(config, shares, mesh)
        states = [init_state(config.replace(seed=seed)) for seed in seeds]
        state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        seed_array = jnp.asarray(seeds, jnp.uint32)
        metrics = metric_names([split for split in ("train", "validation", "test") if split in shares])
        epoch_fn = jax.jit(jax.vmap(functools.partial(scan_epoch, config=config, rows=rows, mesh=mesh),
                                    in_axes=(0, None, None, None, None, 0)), donate_argnums=0)
        eval_fn = jax.jit(jax.vmap(functools.partial(scan_eval, batch_size=config.eval_batch_size, rows=eval_rows,
                                                     mesh=mesh, activation=config.activation),
                                   in_axes=(0, None, None, None)))

        def evaluate(params) -> np.ndarray:
            scores = {}
            for name in shares:
                correct, total_loss = eval_fn(params, *splits[name])
                scores[f"{name}_accuracy"] = np.asarray(correct) / shares[name].total
                scores[f"{name}_loss"] = np.asarray(total_loss) / shares[name].total
            return np.stack([scores[metric] for metric in metrics], axis=1)

        start = time.perf_counter()
        history = [evaluate(state.params)]
        for epoch in range(1, config.num_epochs + 1):
            state, _ = epoch_fn(state, *splits["train"], jnp.int32(epoch), seed_array)
            history.append(evaluate(state.params))
        seconds = time.perf_counter() - start
    result = SweepResult(config, list(seeds), metrics, np.stack(history, axis=1), state.params, seconds,
                         environment(mesh))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(os.path.join(out_dir, "sweep.json"), (json.dumps(result.summary(), indent=2) + "\n").encode())
    return result


def settings_label(settings: dict) -> str:
    """`name=value` pairs of a grid cell, lists written comma-separated."""
    return " ".join(f"{name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                    for name, value in settings.items())


def grid_configs(config: Config, axes: dict[str, Sequence]) -> list[tuple[dict, Config]]:
    """Every combination of the axes' values applied to `config`, each validated."""
    names = list(axes)
    cells = [dict(zip(names, values)) for values in itertools.product(*axes.values())]
    return [(cell, config.replace(**cell)) for cell in cells]


def grid(config: Config, axes: dict[str, Sequence], seeds: Sequence[int], out_dir: str | None = None,
         on_cell: Callable[[dict, SweepResult], None] = lambda settings, result: None) -> list[SweepResult]:
    """A seed sweep in every cell of the grid `axes` (setting name -> values) over `config`.

    Every cell is validated before any is trained. Writes `out_dir/grid.json` if given,
    rewritten as each cell finishes.
    """
    cells = grid_configs(config, axes)
    mesh = parallel.make_mesh(1, config.platform)
    for _, cell_config in cells:
        memory.check_fits(cell_config, mesh, num_models=len(seeds))
    results, shares = [], {}
    for settings, cell_config in cells:
        data_key = (cell_config.validation_size, cell_config.data_dir)
        if data_key not in shares:
            shares[data_key] = data.load_shares(*data_key)
        results.append(sweep(cell_config, seeds, shares=shares[data_key]))
        on_cell(settings, results[-1])
        if out_dir:
            summary = {"axes": {name: list(values) for name, values in axes.items()}, "seeds": list(seeds),
                       "cells": [{"settings": s, **r.summary()} for (s, _), r in zip(cells, results)]}
            os.makedirs(out_dir, exist_ok=True)
            write_atomic(os.path.join(out_dir, "grid.json"), (json.dumps(summary, indent=2) + "\n").encode())
    return results
