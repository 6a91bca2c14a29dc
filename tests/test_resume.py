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
from mnist_jax.cli import main as cli_main
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
    with pytest.raises(ConfigError, match=r"these differ from its config.json: batch_size \(the run's 32, given 16\)"):
        train(config.replace(batch_size=16), str(tmp_path), resume=True)


def folder_state(path) -> dict:
    """Every file under `path`, with its bytes and modification time."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


SMALL = ["--layer-sizes", "784,16,10", "--batch-size", "32", "--eval-batch-size", "62", "--quiet"]


def test_resume_with_more_epochs_extends_the_run_to_what_a_longer_run_gives(data_dir, tmp_path):
    extended, whole = tmp_path / "extended", tmp_path / "whole"
    assert cli_main(["train", *SMALL, "--data-dir", data_dir, "--epochs", "2", "--out", str(extended)]) == 0
    assert cli_main(["train", "--resume", str(extended), "--epochs", "3"]) == 0
    assert cli_main(["train", *SMALL, "--data-dir", data_dir, "--epochs", "3", "--out", str(whole)]) == 0
    summary = json.loads((extended / "summary.json").read_text())
    assert summary["status"] == "completed" and [m["epoch"] for m in summary["history"]] == [0, 1, 2, 3]
    assert json.loads((extended / "config.json").read_text())["num_epochs"] == 3
    with np.load(extended / "params.npz") as a, np.load(whole / "params.npz") as b:
        for name in b.files:
            np.testing.assert_array_equal(a[name], b[name])
    assert metrics(extended / "metrics.jsonl") == metrics(whole / "metrics.jsonl")


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "4", "--lr", "0.01"], "these differ from its config.json: learning_rate (the run's 0.001, "
                                        "given 0.01), num_epochs (the run's 2, given 4)"),
    (["--epochs", "1"], "num_epochs (the run's 2, given 1) (--epochs can only extend a run)"),
    (["--preset", "fast"], "layer_sizes (the run's [784, 16, 10], given [784, 128, 10])"),
    (["--overwrite"], "--resume continues the run in its own folder: --out and --overwrite do not apply"),
])
def test_resume_refuses_other_settings_naming_them_and_touching_nothing(data_dir, tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    assert cli_main(["train", *SMALL, "--data-dir", data_dir, "--epochs", "2", "--out", str(run)]) == 0
    before = folder_state(run)
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(run), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert folder_state(run) == before


def test_a_run_shaped_over_its_length_is_not_extended(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", *SMALL, "--data-dir", data_dir, "--epochs", "2", "--schedule", "cosine",
                     "--out", str(run)]) == 0
    before = folder_state(run)
    assert cli_main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert (f"cannot extend {run} from 2 to 3 epochs: its cosine learning-rate schedule is shaped over its 2 epochs"
            in capsys.readouterr().err)
    assert folder_state(run) == before


# The signals share one handler: SIGTERM on both paths, SIGINT on the path that stops part-way.
@pytest.mark.parametrize("pipeline, stop_signal, status", [("stream", "SIGINT", 130), ("device", "SIGTERM", 143),
                                                            ("stream", "SIGTERM", 143)])
def test_a_signal_stops_saves_and_resumes_exactly(data_dir, tmp_path, pipeline, stop_signal, status):
    """SIGINT (Ctrl-C) and SIGTERM (a preemption) alike: stop at the next boundary, checkpoint,
    release the lock, exit 128 + the signal's number."""
    stopped, whole = str(tmp_path / "stopped"), str(tmp_path / "whole")
    proc = subprocess.run([sys.executable, "-m", "tests.interrupt_worker", data_dir, stopped, "2", pipeline],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "STOP_SIGNAL": stop_signal})
    assert proc.returncode == status, proc.stderr[-2000:]
    assert f"stopped by {stop_signal} after epoch" in proc.stderr
    assert f"continue with: mnist-jax train --resume {stopped}" in proc.stderr
    with open(os.path.join(stopped, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "interrupted" and summary["stopped_by"] == stop_signal
    assert not os.path.exists(os.path.join(stopped, "run.lock"))
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
