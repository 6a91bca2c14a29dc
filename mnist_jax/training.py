"""The training loop: set up, then for each epoch train, evaluate and record."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import optax

from mnist_jax import data
from mnist_jax.config import Config, steps_per_epoch
from mnist_jax.errors import ConfigError
from mnist_jax.models import Model, ModelState, Params, Variables, as_run
from mnist_jax.optimizers import make_optimizer
from mnist_jax.pipelines import (
    EpochRun,
    Pipeline,
    check_pipeline,
    evaluation_program,
    make_pipeline,
    to_device,
)
from mnist_jax.records import EpochMetrics, Result, best_epoch
from mnist_jax.reporters import Reporter, Reporters, TensorBoardReporter
from mnist_jax.runs import checkpoints
from mnist_jax.runs.rundir import TENSORBOARD, RunDir
from mnist_jax.runtime import memory, parallel
from mnist_jax.runtime.compilation import Compilations, enable_compilation_cache
from mnist_jax.runtime.determinism import make_deterministic
from mnist_jax.runtime.environment import environment
from mnist_jax.steps import (
    Steps,
    TrainState,
    check_model,
    evaluation_steps,
    make_steps,
    precision,
    recorded,
    split_metrics,
)

__all__ = ["TrainState", "enable_compilation_cache", "score", "train"]


def score(
    params: Params,
    config: Config,
    split: str = "test",
    *,
    model_state: ModelState = (),
    model: Model | None = None,
) -> tuple[float, float]:
    """Accuracy and mean loss of `params` (and the model's state, for a model with one) over a
    whole split, on one device; `model` replaces `config.model`, as in `train`."""
    mesh = parallel.make_mesh(1, config.platform)
    with precision(config):
        share = data.load(config.data_dir)[split]
        evaluate = jax.jit(evaluation_program(config, evaluation_steps(config, model), mesh))
        totals = evaluate(
            parallel.replicate(Variables(params, model_state), mesh),
            {split: to_device(split, share, mesh)},
        )
        metrics = split_metrics(split, *totals[split], share.total)
    return float(metrics[f"{split}_accuracy"]), float(metrics[f"{split}_loss"])


class _StopOnSignal:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM (a preemption: what SLURM, Kubernetes and
    preemptible machines send) ask the loop to stop at its next boundary: the end of the compiled
    call under way, seconds away (`pipelines.pacing`). Across processes the request is shared at
    every boundary, so all of them stop at the same step. The handlers found are put back."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self._signum = 0  # the first signal this process received
        self.agreed: str | None = None  # the signal the run stops on, once a boundary has seen one
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                signum: signal.signal(signum, self._on_signal) for signum in self.SIGNALS
            }
        return self

    def _on_signal(self, signum, frame):
        self._signum = self._signum or signum

    def requested(self) -> bool:
        """Whether a signal asks to stop: in a run of several processes, whether any process has
        received one, through a collective every process calls at the same boundaries."""
        if self.agreed is None:
            received = [self._signum]
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                received = np.ravel(
                    multihost_utils.process_allgather(np.array([self._signum], np.int32))
                )
            self.agreed = next((signal.Signals(int(s)).name for s in received if s), None)
        return self.agreed is not None

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def train(
    config: Config = Config(),
    out_dir: str | None = None,
    *,
    model: Model | None = None,
    optimizer: optax.GradientTransformation | None = None,
    overwrite: bool = False,
    resume: bool = False,
    reporter: Reporter | None = None,
    tensorboard: bool = False,
) -> Result:
    """Trains the model as `config` says (or the `model` and `optimizer` objects given); writes
    the run folder if `out_dir` is given.

    Runs on every device of the platform (or the first `config.devices`), and across all
    processes once `jax.distributed` is initialized. Accuracy and mean loss over the full
    splits are measured before training (epoch 0) and after every epoch; a checkpoint is
    saved as configured. `resume=True` continues the run in `out_dir` from its newest intact
    checkpoint (or from the start if it has none), exactly as if it had not stopped.
    A run whose loss turns non-finite stops with status "diverged", keeping what came before.
    Called from the main thread, it takes SIGINT and SIGTERM as a request to stop: within
    seconds (the compiled call under way, `pipelines.pacing`) it saves a checkpoint and returns
    with status "interrupted"; the handlers it found are put back when it returns.
    `tensorboard=True` also writes TensorBoard event files in `out_dir/tensorboard`.
    Every setting, the model and the optimizer are checked before anything is written.
    """
    config = recorded(config, model, optimizer)
    with contextlib.ExitStack() as stack:
        compilations = stack.enter_context(Compilations())
        if config.deterministic:
            make_deterministic()  # before anything below starts JAX's backends
        # What can be refused is refused before any data is read or anything written.
        check_pipeline(config)
        mesh = parallel.make_mesh(config.devices, config.platform)
        config = as_run(config, mesh.devices.flat[0].platform)  # the CNN's form, as it runs
        for batch_size in (config.batch_size, config.eval_batch_size):
            # fails early if smaller than the device count
            parallel.rows_per_batch(batch_size, mesh)
        if resume and not out_dir:
            raise ConfigError("resuming needs the run folder")
        if tensorboard and not out_dir:
            raise ConfigError("TensorBoard's event files go in the run folder: give it (--out)")
        if resume and jax.process_index() == 0:
            RunDir(out_dir).check_resume(config)
        checked = check_model(config, model)
        if optimizer is None:
            make_optimizer(config)  # a factory's faults too, before any data is read
        memory.check_fits(config, mesh, steps=checked)
        # From here a signal asks for a stop, answered at the first boundary. Every process
        # takes signals so from near its start, so none of them dies at once while the others
        # wait for it in a collective.
        interrupt = stack.enter_context(_StopOnSignal())
        start = time.perf_counter()
        shares = data.load(config.data_dir, config.validation_size)
        data_seconds = time.perf_counter() - start
        steps = make_steps(config, checked, optimizer, train_size=shares["train"].total)
        reporter = reporter or Reporter()
        # In a run of several processes, process 0 alone writes (and locks) the run folder.
        run_dir = None
        if out_dir and jax.process_index() == 0:
            run_dir = stack.enter_context(
                RunDir.open(
                    out_dir,
                    config,
                    resume=resume,
                    overwrite=overwrite,
                    on_warning=reporter.on_warning,
                )
            )
            if tensorboard:
                events = stack.enter_context(
                    TensorBoardReporter(os.path.join(out_dir, TENSORBOARD), shares["train"].total)
                )
                reporter = Reporters([reporter, events])
        return _train(
            config,
            steps,
            shares,
            mesh,
            run_dir,
            out_dir if resume else None,
            reporter,
            interrupt,
            lambda: {
                "compile_seconds": compilations.seconds,
                "compilations": compilations.programs,
                "compilations_from_cache": compilations.from_cache,
                "data_seconds": data_seconds,
            },
        )


class Saved(NamedTuple):
    """What a checkpoint holds beside the history: the training state and, with a validation
    split, the best epoch's parameters and model state (None without one, so its file holds the
    state alone)."""

    state: TrainState
    best: Variables | None


def _train(
    config: Config,
    steps: Steps,
    shares: dict[str, data.Share],
    mesh,
    run_dir: RunDir | None,
    resume_from: str | None,
    reporter: Reporter,
    interrupt: _StopOnSignal,
    costs: Callable[[], dict],
) -> Result:
    with precision(config):
        sizes = {name: share.total for name, share in shares.items()}
        tracks_best = "validation" in shares
        # on a device of the run's own (this process's), not JAX's default platform
        local = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())
        with jax.default_device(local):
            initial = steps.init(config.seed)
        saved_template = Saved(initial, initial.variables if tracks_best else None)
        checkpoint = (
            checkpoints.latest(resume_from, saved_template, reporter.on_warning)
            if resume_from
            else None
        )
        saved = checkpoint.restore(saved_template) if checkpoint else saved_template
        state, best = parallel.replicate(saved.state, mesh), _host_copy(saved.best)
        start_epoch, history = (
            (checkpoint.epoch + 1, list(checkpoint.history)) if checkpoint else (1, [])
        )
        pipeline = make_pipeline(
            config,
            steps,
            shares,
            state,
            mesh,
            start_epoch,
            checkpoint.batches_done if checkpoint else 0,
        )
        env = environment(mesh) | {"convolutions": steps.convolutions}
        reporter.on_start(config, env, steps_per_epoch=steps_per_epoch(config, sizes["train"]))
        reporter.on_history(history)

        def record(epoch: int, scores: dict, epoch_seconds: float | None) -> None:
            nonlocal best
            history.append(
                EpochMetrics(
                    epoch=epoch,
                    **scores,
                    epoch_seconds=epoch_seconds,
                    examples_per_second=epoch_seconds and sizes["train"] / epoch_seconds,
                )
            )
            if tracks_best and best_epoch(history) == epoch:
                best = _host_copy(state.variables)
            reporter.on_epoch(history[-1])
            if run_dir:
                run_dir.write_metrics(history)

        if checkpoint and run_dir:
            run_dir.restart_from(checkpoint)
        status, divergence = "completed", None
        if not checkpoint:
            scores = _evaluate(pipeline, state.variables, sizes, interrupt.requested)
            if scores is None:  # stopped before anything was trained: nothing to save
                status, start_epoch = "interrupted", config.num_epochs + 1
            else:
                record(0, scores, None)
        for epoch in range(start_epoch, config.num_epochs + 1):
            start = time.perf_counter()
            run = pipeline.train_epoch(
                state, epoch, functools.partial(reporter.on_batch, epoch), interrupt.requested
            )
            state, seconds = run.state, time.perf_counter() - start
            # None if the epoch or its evaluation stopped part-way
            scores = (
                _evaluate(pipeline, state.variables, sizes, interrupt.requested)
                if run.completed
                else None
            )
            divergence = _divergence(
                epoch, run, scores, history[-1].epoch, run_dir.last_saved if run_dir else None
            )
            if divergence:
                status = "diverged"
                break
            reporter.on_steps(epoch, run.first_step, run.losses)
            if scores:
                record(epoch, scores, seconds)
            # once per boundary: a collective across processes
            stopping = interrupt.requested()
            if run_dir:
                run_dir.end_epoch(
                    epoch,
                    Saved(state, best),
                    history,
                    batches_done=None if scores else run.batches_done,
                    stopping=stopping,
                )
            if stopping and (scores is None or epoch < config.num_epochs):
                status = "interrupted"
                break
    stopped_by = interrupt.agreed if status == "interrupted" else None
    best_epoch_number = best_epoch(history)
    kept = best if best_epoch_number is not None else None
    result = Result(
        config,
        state.params,
        history,
        status=status,
        divergence=divergence,
        stopped_by=stopped_by,
        best_epoch=best_epoch_number,
        best_params=kept.params if kept else None,
        model_state=state.model_state,
        best_model_state=kept.state if kept else None,
        **env,
        **costs(),
    )
    if run_dir:
        run_dir.write_result(result)
    reporter.on_end(result)
    return result


def _host_copy(variables: Variables | None) -> Variables | None:
    """A host copy of (replicated) variables, safe from the donation of the device buffers."""
    return jax.tree.map(
        lambda leaf: np.array(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf),
        variables,
    )


def _evaluate(
    pipeline: Pipeline,
    variables: Variables,
    sizes: dict[str, int],
    should_stop: Callable[[], bool],
) -> dict[str, float] | None:
    """Every split's metrics, and the seconds they took; None if `should_stop` cut it short."""
    start, scores = time.perf_counter(), {}
    totals_by_split = pipeline.evaluate(variables, should_stop)
    if totals_by_split is None:
        return None
    for name, totals in totals_by_split.items():
        scores.update(split_metrics(name, *totals, sizes[name]))
    return {name: float(value) for name, value in scores.items()} | {
        "eval_seconds": time.perf_counter() - start
    }


def _divergence(
    epoch: int, run: EpochRun, scores: dict | None, last_good_epoch: int, last_saved: int | None
) -> dict | None:
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
    message = (
        f"diverged in epoch {epoch}, steps {first_step}-{last_step}: {cause}; kept the history "
        f"to epoch {last_good_epoch} and {kept}; try a smaller learning rate"
    )
    return {"epoch": epoch, "first_step": first_step, "last_step": last_step, "message": message}
