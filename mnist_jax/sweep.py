"""Seed sweeps: independently seeded models trained together as one vmapped, compiled program."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from mnist_jax import data, parallel
from mnist_jax.config import Config
from mnist_jax.model import Params
from mnist_jax.pipelines import place_splits, scan_epoch, scan_eval
from mnist_jax.results import environment, write_atomic
from mnist_jax.steps import init_state
from mnist_jax.training import precision

METRICS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss")


def statistics(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the half-width of the 95% t confidence interval."""
    values = np.asarray(values, np.float64)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half_width = float(scipy.stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std, "ci95": half_width, "n": n}


@dataclass
class SweepResult:
    """Every seed's history (rows: epochs; columns: METRICS), final parameters and statistics."""

    config: Config
    seeds: list[int]
    histories: np.ndarray  # (seeds, epochs + 1, len(METRICS))
    params: Params  # every leaf has a leading seed axis
    seconds: float
    environment: dict

    def statistics(self) -> list[dict]:
        """Per epoch, the statistics of each metric over the seeds."""
        return [{"epoch": epoch, **{name: statistics(self.histories[:, epoch, i]) for i, name in enumerate(METRICS)}}
                for epoch in range(self.histories.shape[1])]

    def summary(self) -> dict:
        return {"config": self.config.to_dict(), "seeds": self.seeds, "statistics": self.statistics(),
                "per_seed": {str(seed): [dict(zip(("epoch", *METRICS), (epoch, *map(float, row))))
                                         for epoch, row in enumerate(history)]
                             for seed, history in zip(self.seeds, self.histories)},
                "seconds": self.seconds, **self.environment}


def sweep(config: Config, seeds: Sequence[int], out_dir: str | None = None) -> SweepResult:
    """Trains one model per seed (initialization and shuffles both seeded) on one device, as
    a single vmapped program per epoch; each model matches a separate run with that seed."""
    mesh = parallel.make_mesh(1, config.platform)
    rows = parallel.rows_per_batch(config.batch_size, mesh)
    eval_rows = parallel.rows_per_batch(config.eval_batch_size, mesh)
    with precision(config):
        names = data.split_names(config.validation_size, config.data_dir)  # trains on the same examples as `train`
        shares = {name: data.load_share(names[name], config.data_dir) for name in ("train", "test")}
        splits = place_splits(config, shares, mesh)
        states = [init_state(config.replace(seed=seed)) for seed in seeds]
        state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        seed_array = jnp.asarray(seeds, jnp.uint32)
        epoch_fn = jax.jit(jax.vmap(functools.partial(scan_epoch, config=config, rows=rows, mesh=mesh),
                                    in_axes=(0, None, None, None, None, 0)), donate_argnums=0)
        eval_fn = jax.jit(jax.vmap(functools.partial(scan_eval, batch_size=config.eval_batch_size, rows=eval_rows,
                                                     mesh=mesh), in_axes=(0, None, None, None)))

        def evaluate(params) -> np.ndarray:
            columns = []
            for name in ("train", "test"):
                correct, total_loss = eval_fn(params, *splits[name])
                columns.append((np.asarray(correct) / shares[name].total, np.asarray(total_loss) / shares[name].total))
            (train_acc, train_loss), (test_acc, test_loss) = columns
            return np.stack([train_acc, test_acc, train_loss, test_loss], axis=1)

        start = time.perf_counter()
        history = [evaluate(state.params)]
        for epoch in range(1, config.num_epochs + 1):
            state, _ = epoch_fn(state, *splits["train"], jnp.int32(epoch), seed_array)
            history.append(evaluate(state.params))
        seconds = time.perf_counter() - start
    result = SweepResult(config, list(seeds), np.stack(history, axis=1), state.params, seconds, environment(mesh))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_atomic(os.path.join(out_dir, "sweep.json"), (json.dumps(result.summary(), indent=2) + "\n").encode())
    return result
