"""A stop within the grace period, whatever the epoch's length: compiled calls sized by their
measured step time, the same bits whatever their sizes, a checkpoint seconds after a SIGTERM that
arrives while a slow model's call runs (training or evaluating), exact resumes from it, and the
signal handlers a caller had put back."""

import json
import os
import re
import signal
import time

import jax
import numpy as np
import pytest

from mnist_jax import train
from mnist_jax.pipelines import pacing
from mnist_jax.reporters import Reporter
from mnist_jax.runs import checkpoints
from tests.helpers import (
    MNIST_JAX,
    NUM_TRAIN,
    TINY_FLAGS,
    assert_same_params,
    params_of,
    run_in_a_child,
    scores,
    worker,
)

STOP_SECONDS = 10  # the bound the run-folder page promises, beside one step
# The slow runs: 75 steps an epoch; on the stream, chunks longer than the bound (40 steps).
SLOW_FLAGS = ["--batch-size", "4", "--epochs", "1", "--batches-per-chunk", "40"]
SLOW_MODEL = "tests.custom_models:slow_cnn"  # the worker's


def test_a_call_is_sized_from_the_step_time_before_it():
    pacer = pacing.Pacer(seconds=5.0)
    assert pacer.next_span(100) == 1  # nothing measured yet: one step
    pacer.step_seconds = 0.4
    assert pacer.next_span(100) == 12  # 12 steps of 0.4 s fit in 5 s
    assert pacer.next_span(7) == 7  # never past the end
    pacer.step_seconds = 30.0
    assert pacer.next_span(100) == 1  # a step longer than the target: one a call
    slept = pacer.timed(3, lambda seconds: time.sleep(seconds) or "done", 0.03)
    assert slept == "done" and pacer.step_seconds >= 0.01


def test_split_spans_take_the_next_batches_through_the_splits_in_order():
    sizes = {"train": 5, "validation": 2, "test": 2}
    spans = pacing.split_spans({"train": 3, "validation": 0, "test": 0}, sizes, 3)
    assert {name: tuple(map(int, span)) for name, span in spans.items()} == {
        "train": (3, 5),
        "validation": (0, 1),
        "test": (0, 0),
    }


class Calls(Reporter):
    def __init__(self):
        self.seen = []

    def on_batch(self, epoch, batches_done):
        self.seen.append((epoch, batches_done))


@pytest.mark.parametrize("pipeline", ["device", "stream"])
@pytest.mark.parametrize(
    "model",
    [
        dict(),
        # a model with state and a short last batch: its last step has a shape of its own
        dict(model="cnn", cnn_channels=(4, 8), cnn_batchnorm=True),
    ],
    ids=["mlp", "batchnorm-cnn"],
)
def test_calls_of_any_length_give_the_same_bits(tiny_config, monkeypatch, pipeline, model):
    config = tiny_config.replace(pipeline=pipeline, **model)
    quick, one_step = Calls(), Calls()
    whole = train(config, reporter=quick)
    monkeypatch.setattr(pacing, "CALL_SECONDS", 0.0)
    stepwise = train(config, reporter=one_step)
    assert len(quick.seen) < 10 and one_step.seen == [(e, d) for e in (1, 2) for d in range(1, 11)]
    for a, b in zip(
        jax.tree.leaves((whole.params, whole.model_state)),
        jax.tree.leaves((stepwise.params, stepwise.model_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert [m.test_loss for m in whole.history] == [m.test_loss for m in stepwise.history]


def slow_run(data_dir, out, pipeline, epoch, after, delay, **sleeps):
    """The tiny run of the slow model, stopped by a SIGTERM `delay` seconds after a call of epoch
    `epoch` ends with `after` batches done; returns the process, and the seconds from the signal
    to its checkpoint and to its exit."""
    proc = run_in_a_child(
        [
            *worker("stop_in_a_call"),
            data_dir,
            out,
            pipeline,
            str(epoch),
            str(after),
            str(delay),
            *SLOW_FLAGS,
        ],
        **sleeps,
    )
    exited = time.time()
    sent = float(re.search(r"sent SIGTERM at (\S+)", proc.stderr).group(1))
    folder = os.path.join(out, checkpoints.FOLDER)
    saved = max(os.stat(os.path.join(folder, name)).st_mtime for name in os.listdir(folder))
    return proc, saved - sent, exited - sent


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    """The slow model's run trained with no stop and no sleeps, once per data path: the sleeps
    are read as the programs run, so the programs are those of the slow runs."""
    runs = {}

    def run(pipeline: str) -> str:
        if pipeline not in runs:
            out = str(tmp_path_factory.mktemp(f"uninterrupted-{pipeline}"))
            proc = run_in_a_child(
                [*MNIST_JAX, "train", *TINY_FLAGS, *SLOW_FLAGS, "--model", SLOW_MODEL, "--quiet"]
                + ["--data-dir", data_dir, "--pipeline", pipeline, "--out", out]
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            runs[pipeline] = out
        return runs[pipeline]

    return run


def assert_resumes_to(stopped, uninterrupted):
    """The stopped run, resumed at full speed, is the uninterrupted run bit for bit."""
    resumed = run_in_a_child([*MNIST_JAX, "train", "--resume", stopped, "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_params(params_of(stopped), params_of(uninterrupted))
    assert scores(stopped) == scores(uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_a_sigterm_while_a_long_epoch_trains_is_checkpointed_in_seconds(
    data_dir, tmp_path, pipeline, uninterrupted
):
    """75 steps of 0.5 s: an epoch of 37 s, longer than a 30 s grace period. The SIGTERM
    arrives 2.5 s into the second call (about 10 steps, sized from the first): the run saves after
    that call, part-way through the epoch, and its resume is the uninterrupted run, bit for bit."""
    stopped, step_seconds = str(tmp_path / "stopped"), 0.5
    proc, to_checkpoint, to_exit = slow_run(
        data_dir, stopped, pipeline, 1, 1, 2.5, SLOW_STEP_SECONDS=str(step_seconds)
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    saved = checkpoints.latest(stopped)
    steps = NUM_TRAIN // 4
    assert saved.epoch == 0 and 1 < saved.batches_done < steps
    assert to_checkpoint <= STOP_SECONDS + step_seconds
    assert to_exit <= STOP_SECONDS + step_seconds
    assert_resumes_to(stopped, uninterrupted(pipeline))


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_a_sigterm_while_a_slow_evaluation_runs_keeps_the_trained_epoch(
    data_dir, tmp_path, pipeline, uninterrupted
):
    """Evaluation batches of 1 s (7 in all): the SIGTERM arrives as the epoch's evaluation starts.
    The run saves the trained epoch after the evaluation call under way, without its scores, and
    the resume evaluates it: the uninterrupted run, bit for bit."""
    stopped, eval_seconds = str(tmp_path / "stopped"), 1.0
    steps = NUM_TRAIN // 4
    proc, to_checkpoint, to_exit = slow_run(
        data_dir, stopped, pipeline, 1, steps, 0.3, SLOW_EVAL_SECONDS=str(eval_seconds)
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    saved = checkpoints.latest(stopped)
    assert (saved.epoch, saved.batches_done) == (0, steps)  # trained, not evaluated
    assert [m.epoch for m in saved.history] == [0]
    assert to_checkpoint <= STOP_SECONDS + eval_seconds
    assert to_exit <= STOP_SECONDS + eval_seconds
    assert_resumes_to(stopped, uninterrupted(pipeline))


def test_train_puts_back_the_signal_handlers_it_found(tiny_config):
    """After a normal return and after a stop alike: a notebook's or a caller's own handlers
    keep working."""

    def callers(signum, frame):
        raise AssertionError("train's own handler should have taken the signal")

    class Watch(Reporter):
        def __init__(self, stop: bool):
            self.stop, self.handlers = stop, []

        def on_batch(self, epoch, batches_done):
            self.handlers.append({s: signal.getsignal(s) for s in STOPS})
            if self.stop:
                os.kill(os.getpid(), signal.SIGTERM)

    STOPS = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, callers) for s in STOPS}
    try:
        for stop in (False, True):
            watch = Watch(stop)
            result = train(tiny_config, reporter=watch)
            assert result.status == ("interrupted" if stop else "completed")
            assert all(h is not callers for seen in watch.handlers for h in seen.values())
            assert {s: signal.getsignal(s) for s in STOPS} == dict.fromkeys(STOPS, callers)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@pytest.mark.slow
def test_a_sigterm_in_the_first_evaluation_stops_with_nothing_to_save(
    data_dir, tmp_path, uninterrupted
):
    """Before anything is trained there is nothing to checkpoint: the run stops after the
    evaluation call under way, says so, and its resume starts over."""
    stopped, eval_seconds = str(tmp_path / "stopped"), 1.0
    proc = run_in_a_child(
        [*worker("stop_in_a_call"), data_dir, stopped, "device", "0", "0", "0.3", *SLOW_FLAGS],
        SLOW_EVAL_SECONDS=str(eval_seconds),
    )
    exited = time.time()
    sent = float(re.search(r"sent SIGTERM at (\S+)", proc.stderr).group(1))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert exited - sent <= STOP_SECONDS + eval_seconds
    assert "stopped by SIGTERM before epoch 0's evaluation ended (nothing was trained)" in (
        proc.stderr
    )
    assert checkpoints.latest(stopped) is None
    with open(os.path.join(stopped, "summary.json")) as f:
        summary = json.load(f)
    assert (summary["status"], summary["history"], summary["final_test_accuracy"]) == (
        "interrupted",
        [],
        None,
    )
    assert_resumes_to(stopped, uninterrupted("device"))
