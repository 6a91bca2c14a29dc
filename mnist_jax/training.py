"""The training loop: compile, then train and evaluate epoch by epoch."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time

import jax
import numpy as np

from mnist_jax import checkpoints, data, memory, parallel
from mnist_jax.config import Config, ConfigError
from mnist_jax.model import Params
from mnist_jax.pipelines import PIPELINES, eval_chunk, stream_eval
from mnist_jax.results import (EpochMetrics, Reporter, Result, RunDir, RunExistsError, StorageError, environment,
                               lock_run_folder, unlock_run_folder)
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
    saved as configured. `resume=True` continues the run in `out_dir` from its newest intact
    checkpoint (or from the start if it has none), exactly as if it had not stopped.
    A run whose loss turns non-finite stops with status "diverged", keeping what came before.
    """
    mesh = parallel.make_mesh(config.devices, config.platform)
    for batch_size in (config.batch_size, config.eval_batch_size):
        parallel.rows_per_batch(batch_size, mesh)  # fails early if smaller than the device count
    memory.check_fits(config, mesh)
    if resume and not out_dir:
        raise ConfigError("resuming needs the run folder")
    reporter = reporter or Reporter()
    # In a run of several processes, process 0 alone writes (and locks) the run folder.
    lead = bool(out_dir) and jax.process_index() == 0
    if lead:
        with _storage("the lock file", out_dir, None):
            recovered = lock_run_folder(out_dir)
        if recovered:
            reporter.on_warning(recovered)
    try:
        run_dir = None
        if lead:
            with _storage("config.json", out_dir, None):
                run_dir = RunDir.open_existing(out_dir, config) if resume else RunDir.create(out_dir, config, overwrite)
        return _train(config, mesh, out_dir, run_dir, resume, reporter)
    finally:
        if lead:
            unlock_run_folder(out_dir)


def _train(config: Config, mesh, out_dir: str | None, run_dir: RunDir | None, resume: bool,
           reporter: Reporter) -> Result:
    with precision(config):
        shares = data.load_shares(config.validation_size, config.data_dir)
        sizes = {name: share.total for name, share in shares.items()}
        state = init_state(config)
        saved = checkpoints.latest(out_dir, state, reporter.on_warning) if resume else None
        state = parallel.replicate(saved.restore(state) if saved else state, mesh)
        history = list(saved.history) if saved else []
        start_epoch = saved.epoch + 1 if saved else 1
        last_saved = saved.epoch if saved else None
        pipeline = PIPELINES[config.pipeline](config, shares, state, mesh, start_epoch,
                                              saved.batches_done if saved else 0)
        env = environment(mesh)
        reporter.on_start(config, env, steps_per_epoch=-(-sizes["train"] // config.batch_size))
        for metrics in history:
            reporter.on_epoch(metrics)

        def evaluate(params: Params) -> dict[str, float]:
            start, scores = time.perf_counter(), {}
            for name in shares:
                correct, total_loss = pipeline.evaluate(params, name)
                scores[f"{name}_accuracy"] = float(correct) / sizes[name]
                scores[f"{name}_loss"] = float(total_loss) / sizes[name]
            return {**scores, "eval_seconds": time.perf_counter() - start}

        def record(epoch: int, scores: dict, epoch_seconds: float | None) -> None:
            history.append(EpochMetrics(epoch=epoch, **scores, epoch_seconds=epoch_seconds,
                                        examples_per_second=epoch_seconds and sizes["train"] / epoch_seconds))
            reporter.on_epoch(history[-1])
            if run_dir:
                with _storage("metrics.jsonl", run_dir.path, last_saved):
                    run_dir.write_metrics(history)

        if run_dir and saved:
            with _storage("metrics.jsonl", run_dir.path, last_saved):
                run_dir.write_metrics(history)
        if not saved:
            record(0, evaluate(state.params), None)
        status, divergence = "completed", None
        with _StopOnInterrupt() as interrupt:
            for epoch in range(start_epoch, config.num_epochs + 1):
                start = time.perf_counter()
                run = pipeline.train_epoch(state, epoch, functools.partial(reporter.on_batch, epoch),
                                           interrupt.requested)
                state, batches_done, seconds = run.state, run.batches_done, time.perf_counter() - start
                scores = evaluate(state.params) if batches_done is None else None
                divergence = _divergence(epoch, run, scores, history[-1].epoch, last_saved)
                if divergence:
                    status = "diverged"
                    break
                if scores:
                    record(epoch, scores, seconds)
                last = epoch == config.num_epochs
                if run_dir and (batches_done or interrupt.requested() or last or epoch % config.checkpoint_every == 0):
                    done = epoch - 1 if batches_done else epoch
                    with _storage(f"the checkpoint of epoch {epoch}", run_dir.path, last_saved):
                        checkpoints.save(run_dir.path, done, state, history, config.keep_checkpoints, batches_done or 0)
                    last_saved = done
                if interrupt.requested() and not last:
                    status = "interrupted"
                    break
    result = Result(config, state.params, history, pipeline.compile_seconds, status=status, divergence=divergence,
                    **env)
    if run_dir:
        with _storage("the summary", run_dir.path, last_saved):
            run_dir.write_result(result)
    reporter.on_end(result)
    return result


def _divergence(epoch: int, run, scores: dict | None, last_good_epoch: int, last_saved: int | None) -> dict | None:
    """Where the epoch's loss turned non-finite, or None if it stayed finite."""
    last_step = run.first_step + len(run.losses)
    bad = np.flatnonzero(~np.isfinite(run.losses))
    if bad.size:
        first_step = run.first_step + int(bad[0]) + 1
        cause = f"the training loss became {run.losses[bad[0]]} at step {first_step}"
    elif scores and not all(np.isfinite(v) for k, v in scores.items() if k.endswith("_loss")):
        first_step, cause = last_step, f"the evaluation loss is not finite after step {last_step}"
    else:
        return None
    kept = f"the checkpoint of epoch {last_saved}" if last_saved is not None else "no checkpoint"
    message = (f"diverged in epoch {epoch}, steps {first_step}-{last_step}: {cause}; kept the history "
               f"to epoch {last_good_epoch} and {kept}; try a smaller learning rate")
    return {"epoch": epoch, "first_step": first_step, "last_step": last_step, "message": message}


@contextlib.contextmanager
def _storage(what: str, folder: str, last_saved: int | None):
    """Turns a failed write into a StorageError that says what is kept and how to go on."""
    try:
        yield
    except OSError as e:
        if isinstance(e, RunExistsError):
            raise
        kept = f"its checkpoint of epoch {last_saved}" if last_saved is not None else "what was written before"
        raise StorageError(f"cannot write {what} in {folder}: {e.strerror or e}; the folder keeps {kept} intact; "
                           f"free space or fix the folder, then continue with `mnist-jax train --resume {folder}`"
                           ) from e
