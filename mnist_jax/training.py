"""The training loop: compile, then train and evaluate epoch by epoch."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time

import jax
import numpy as np

from mnist_jax import checkpoints, data, parallel
from mnist_jax.config import Config, ConfigError
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
        evaluate = jax.jit(functools.partial(eval_chunk, activation=config.activation))
        correct, total_loss = stream_eval(evaluate, params, stream)
        return float(correct) / len(labels), float(total_loss) / len(labels)


class _StopOnInterrupt:
    """Within the block, Ctrl-C (SIGINT) asks the loop to stop at its next boundary."""

    def __enter__(self):
        self._flag = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        self._flag = True

    def requested(self) -> bool:
        return self._flag

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(config: Config = Config(), out_dir: str | None = None, *, overwrite: bool = False,
          resume: bool = False, reporter: Reporter | None = None) -> Result:
    """Trains the MLP as `config` says; writes the run folder if `out_dir` is given.

    Runs on every device of the platform (or the first `config.devices`), and across all
    processes once `jax.distributed` is initialized. Accuracy and mean loss over the full
    splits are measured before training (epoch 0) and after every epoch; a checkpoint is
    saved as configured. `resume=True` continues the run in `out_dir` from its newest
    checkpoint (or from the start if it has none), exactly as if it had not stopped.
    """
    mesh = parallel.make_mesh(config.devices, config.platform)
    for batch_size in (config.batch_size, config.eval_batch_size):
        parallel.rows_per_batch(batch_size, mesh)  # fails early if smaller than the device count
    if resume and not out_dir:
        raise ConfigError("resuming needs the run folder")
    # In a run of several processes, process 0 alone writes the run folder.
    run_dir = None
    if out_dir and jax.process_index() == 0:
        run_dir = RunDir.open_existing(out_dir, config) if resume else RunDir.create(out_dir, config, overwrite)
    reporter = reporter or Reporter()
    with precision(config):
        shares = {name: data.load_share(split, config.data_dir)
                  for name, split in data.split_names(config.validation_size, config.data_dir).items()}
        sizes = {name: share.total for name, share in shares.items()}
        state = init_state(config)
        saved = checkpoints.latest(out_dir) if resume else None
        state = parallel.replicate(saved.restore(state) if saved else state, mesh)
        history = list(saved.history) if saved else []
        start_epoch = saved.epoch + 1 if saved else 1
        pipeline = PIPELINES[config.pipeline](config, shares, state, mesh, start_epoch,
                                              saved.batches_done if saved else 0)
        env = environment(mesh)
        reporter.on_start(config, env, steps_per_epoch=-(-sizes["train"] // config.batch_size))
        for metrics in history:
            reporter.on_epoch(metrics)
        if run_dir and saved:
            run_dir.rewrite_metrics(history)

        def record(epoch: int, params: Params, epoch_seconds: float | None) -> None:
            start = time.perf_counter()
            scores = {}
            for name in shares:
                correct, total_loss = pipeline.evaluate(params, name)
                scores[f"{name}_accuracy"] = float(correct) / sizes[name]
                scores[f"{name}_loss"] = float(total_loss) / sizes[name]
            metrics = EpochMetrics(
                epoch=epoch, **scores, epoch_seconds=epoch_seconds,
                examples_per_second=epoch_seconds and sizes["train"] / epoch_seconds,
                eval_seconds=time.perf_counter() - start)
            history.append(metrics)
            reporter.on_epoch(metrics)
            if run_dir:
                run_dir.append_metrics(metrics)

        if not saved:
            record(0, state.params, None)
        status = "completed"
        with _StopOnInterrupt() as interrupt:
            for epoch in range(start_epoch, config.num_epochs + 1):
                start = time.perf_counter()
                state, batches_done = pipeline.train_epoch(
                    state, epoch, functools.partial(reporter.on_batch, epoch), interrupt.requested)
                if batches_done is None:
                    record(epoch, state.params, time.perf_counter() - start)
                last = epoch == config.num_epochs
                if run_dir and (batches_done or interrupt.requested() or last or epoch % config.checkpoint_every == 0):
                    checkpoints.save(run_dir.path, epoch - 1 if batches_done else epoch, state, history,
                                     config.keep_checkpoints, batches_done or 0)
                if interrupt.requested() and not last:
                    status = "interrupted"
                    break
    result = Result(config, state.params, history, pipeline.compile_seconds, status=status, **env)
    if run_dir:
        run_dir.write_result(result)
    reporter.on_end(result)
    return result
