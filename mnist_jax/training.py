"""The training loop: compile, then train and evaluate epoch by epoch."""

from __future__ import annotations

import contextlib
import functools
import time

import jax
import numpy as np

from mnist_jax import data, parallel
from mnist_jax.config import Config
from mnist_jax.model import Params
from mnist_jax.pipelines import PIPELINES, eval_chunk, stream_eval
from mnist_jax.results import EpochMetrics, Reporter, Result, RunDir, environment
from mnist_jax.steps import TrainState, init_state

__all__ = ["TrainState", "enable_compilation_cache", "score", "train"]


def precision(config: Config):
    """JAX's 64-bit mode for a float64 config, for the duration of a run."""
    return jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()


def enable_compilation_cache(path: str) -> None:
    """Keeps compiled programs in `path`, so later runs of the same config skip compiling."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def score(params: Params, config: Config, split: str = "test") -> tuple[float, float]:
    """Accuracy and mean loss of `params` over a whole split."""
    with precision(config):
        images, labels = data.load_split(split, config.data_dir)
        stream = data.batch_chunks(images, labels, np.arange(len(labels))[None], config.eval_batch_size)
        correct, total_loss = stream_eval(jax.jit(eval_chunk), params, stream)
        return float(correct) / len(labels), float(total_loss) / len(labels)


def train(config: Config = Config(), out_dir: str | None = None, *, overwrite: bool = False,
          reporter: Reporter | None = None) -> Result:
    """Trains the MLP as `config` says; writes the run folder if `out_dir` is given.

    Runs on every device of the platform (or the first `config.devices`), and across all
    processes once `jax.distributed` is initialized.

    Accuracy and mean loss over the full splits are measured before training
    (epoch 0) and after every epoch.
    """
    mesh = parallel.make_mesh(config.devices, config.platform)
    for batch_size in (config.batch_size, config.eval_batch_size):
        parallel.rows_per_batch(batch_size, mesh)  # fails early if smaller than the device count
    # In a run of several processes, process 0 alone writes the run folder.
    writes = out_dir and jax.process_index() == 0
    run_dir = RunDir.create(out_dir, config, overwrite=overwrite) if writes else None
    reporter = reporter or Reporter()
    with precision(config):
        shares = {name: data.load_share(name, config.data_dir) for name in ("train", "test")}
        sizes = {name: share.total for name, share in shares.items()}
        state = parallel.replicate(init_state(config), mesh)
        pipeline = PIPELINES[config.pipeline](config, shares, state, mesh)
        env = environment(mesh)
        reporter.on_start(config, env, steps_per_epoch=-(-sizes["train"] // config.batch_size))
        history = []

        def record(epoch: int, params: Params, epoch_seconds: float | None) -> None:
            start = time.perf_counter()
            totals = {name: pipeline.evaluate(params, name) for name in ("train", "test")}
            (train_acc, train_loss), (test_acc, test_loss) = (
                (float(correct) / sizes[name], float(total_loss) / sizes[name])
                for name, (correct, total_loss) in totals.items())
            metrics = EpochMetrics(
                epoch, train_acc, test_acc, train_loss, test_loss, epoch_seconds,
                examples_per_second=epoch_seconds and sizes["train"] / epoch_seconds,
                eval_seconds=time.perf_counter() - start)
            history.append(metrics)
            reporter.on_epoch(metrics)
            if run_dir:
                run_dir.append_metrics(metrics)

        record(0, state.params, None)
        for epoch in range(1, config.num_epochs + 1):
            start = time.perf_counter()
            state = pipeline.train_epoch(state, epoch, functools.partial(reporter.on_batch, epoch))
            record(epoch, state.params, time.perf_counter() - start)
    result = Result(config, state.params, history, pipeline.compile_seconds, **env)
    if run_dir:
        run_dir.write_result(result)
    reporter.on_end(result)
    return result
