"""Checkpoints and exact resume after a real SIGKILL."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnist_jax import Config, checkpoints, train
from mnist_jax.steps import init_state

MNIST_JAX = [sys.executable, "-m", "mnist_jax.cli"]


def metrics(path):
    """Each epoch's accuracies and losses (timings differ run to run)."""
    with open(path) as f:
        return [(m["epoch"], m["train_accuracy"], m["test_accuracy"], m["train_loss"], m["test_loss"])
                for m in map(json.loads, f)]


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_resume_after_sigkill_is_bit_identical(data_dir, tmp_path, pipeline):
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    proc = subprocess.run([sys.executable, "-m", "tests.resume_worker", data_dir, killed, "3", pipeline],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoints.latest(killed).epoch == 2 and not os.path.exists(os.path.join(killed, "summary.json"))

    resumed = subprocess.run([*MNIST_JAX, "train", "--resume", killed, "--quiet"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [line.split("|")[0].strip() for line in resumed.stdout.splitlines() if "|" in line][1:] == [
        "0", "1", "2", "3", "4"]  # the restored rows, then the new ones
    config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=4, eval_batch_size=62,
                    batches_per_chunk=4, pipeline=pipeline, data_dir=data_dir)
    train(config, whole)
    with np.load(os.path.join(killed, "params.npz")) as a, np.load(os.path.join(whole, "params.npz")) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert metrics(os.path.join(killed, "metrics.jsonl")) == metrics(os.path.join(whole, "metrics.jsonl"))


def test_checkpoints_keep_the_newest(data_dir, tmp_path):
    config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=5, eval_batch_size=62,
                    keep_checkpoints=2, checkpoint_every=2, data_dir=data_dir)
    result = train(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch-00004.npz", "epoch-00005.npz"]
    saved = checkpoints.latest(str(tmp_path))
    assert saved.epoch == 5 and [m.epoch for m in saved.history] == list(range(6))
    restored = saved.restore(init_state(config))
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(result.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="checkpoint holds"):
        saved.restore(result.params)  # the template must have the state's structure


def test_resume_refuses_a_changed_config(data_dir, tmp_path):
    from mnist_jax import ConfigError

    config = Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=1, eval_batch_size=62, data_dir=data_dir)
    train(config, str(tmp_path))
    with pytest.raises(ConfigError, match="these differ: batch_size"):
        train(config.replace(batch_size=16), str(tmp_path), resume=True)


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_sigint_stops_saves_and_resumes_exactly(data_dir, tmp_path, pipeline):
    stopped, whole = str(tmp_path / "stopped"), str(tmp_path / "whole")
    proc = subprocess.run([sys.executable, "-m", "tests.interrupt_worker", data_dir, stopped, "2", pipeline],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert f"continue with: mnist-jax train --resume {stopped}" in proc.stderr
    with open(os.path.join(stopped, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "interrupted"
    saved = checkpoints.latest(stopped)
    # stream: stopped after 8 of epoch 2's 10 batches; device: an epoch is one call, so after it
    assert (saved.epoch, saved.batches_done) == ((1, 8) if pipeline == "stream" else (2, 0))
    assert summary["history"][-1]["epoch"] == saved.epoch

    resumed = subprocess.run([*MNIST_JAX, "train", "--resume", stopped, "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    subprocess.run([sys.executable, "-m", "tests.interrupt_worker", data_dir, whole, "0", pipeline], check=True,
                   capture_output=True, timeout=300)
    with np.load(os.path.join(stopped, "params.npz")) as a, np.load(os.path.join(whole, "params.npz")) as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert metrics(os.path.join(stopped, "metrics.jsonl")) == metrics(os.path.join(whole, "metrics.jsonl"))


@pytest.mark.parametrize("pipeline", ["device", "stream"])
def test_same_config_gives_identical_summaries(data_dir, tmp_path, pipeline):
    args = ["train", "--layer-sizes", "784,16,10", "--batch-size", "32", "--epochs", "2", "--eval-batch-size", "62",
            "--pipeline", pipeline, "--data-dir", data_dir, "--quiet"]
    for run in ("a", "b"):
        subprocess.run([*MNIST_JAX, *args, "--out", str(tmp_path / run)], check=True, capture_output=True, timeout=300)
    a, b = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("a", "b"))
    strip = lambda s: [{k: v for k, v in m.items() if not k.endswith("seconds") and k != "examples_per_second"}  # noqa: E731
                       for m in s["history"]]
    assert strip(a) == strip(b) and a["final_test_accuracy"] == b["final_test_accuracy"]
    with np.load(tmp_path / "a" / "params.npz") as pa, np.load(tmp_path / "b" / "params.npz") as pb:
        assert all(np.array_equal(pa[name], pb[name]) for name in pa.files)
