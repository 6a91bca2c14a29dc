"""Storage faults while writing the run folder, provoked for real: what was saved stays intact and
the run resumes to the parameters of one that never failed."""

import errno
import os
import shutil
import subprocess

import pytest

from mnist_jax import train
from mnist_jax.cli import main
from mnist_jax.errors import StorageError
from mnist_jax.runs import checkpoints
from tests.helpers import (
    MNIST_JAX,
    TINY_FLAGS,
    assert_same_params,
    metrics_lines,
    params_of,
    run_in_a_child,
    tiny,
    train_as_a_child,
)


def _fail_writes(monkeypatch, name: str) -> None:
    """Makes writing the file called `name` fail as a full disk does, where the atomic write puts
    it in place; every other file is written."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(data_dir, tmp_path, monkeypatch):
    config = tiny(data_dir, num_epochs=3)
    whole, failed = str(tmp_path / "whole"), str(tmp_path / "failed")
    train(config, whole)
    _fail_writes(monkeypatch, "epoch-00002.npz")
    with pytest.raises(
        StorageError,
        match="cannot write the checkpoint of epoch 2 .*No space left on device; "
        "the folder keeps its checkpoint of epoch 1 intact",
    ):
        train(config, failed)
    monkeypatch.undo()
    assert checkpoints.latest(failed).epoch == 1 and os.listdir(
        os.path.join(failed, "checkpoints")
    ) == ["epoch-00001.npz"]  # no temporary file left behind
    assert [m["epoch"] for m in metrics_lines(failed)] == [0, 1, 2]
    assert not os.path.exists(os.path.join(failed, "run.lock"))
    train(config, failed, resume=True)  # after freeing space: nothing lost
    assert_same_params(params_of(failed), params_of(whole))
    assert [m["test_loss"] for m in metrics_lines(failed)] == [
        m["test_loss"] for m in metrics_lines(whole)
    ]


def test_a_failed_summary_write_loses_nothing(data_dir, tmp_path, monkeypatch):
    config = tiny(data_dir)
    whole, failed = str(tmp_path / "whole"), str(tmp_path / "failed")
    train(config, whole)
    _fail_writes(monkeypatch, "params.npz")  # the first file the summary writes
    with pytest.raises(StorageError, match="cannot write the summary"):
        train(config, failed)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(failed, "summary.json"))
    assert [m["epoch"] for m in metrics_lines(failed)] == [0, 1, 2]
    assert main(["train", "--resume", failed, "--quiet"]) == 0
    assert_same_params(params_of(failed), params_of(whole))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 400 KiB tmpfs (needs root and mount); unmounted afterwards."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
        capture_output=True,
        timeout=60,
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True, timeout=60)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_real_full_or_read_only_filesystem(data_dir, tmp_path, small_tmpfs, fault):
    """Each run of the folder in a process of its own; the run it ends as, in this one on their
    platform."""
    config = tiny(data_dir, num_epochs=4)
    out = str(small_tmpfs / "run")
    flags = [*TINY_FLAGS, "--data-dir", data_dir, "--out", out, "--quiet"]
    if fault == "read-only":
        proc = run_in_a_child(
            [*MNIST_JAX, "train", *flags, "--epochs", "2", "--keep-checkpoints", "1"]
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True, timeout=60)
        proc = run_in_a_child([*MNIST_JAX, "train", "--resume", out, "--quiet"])
        before = params_of(out)
    else:  # three checkpoints of about 150 KiB each do not fit in 400 KiB
        proc = run_in_a_child([*MNIST_JAX, "train", *flags, "--epochs", "4"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = "Read-only file system" if fault == "read-only" else "No space left on device"
    assert "mnist-jax train: error: cannot write " in proc.stderr and message in proc.stderr
    saved = checkpoints.latest(out)
    assert saved is not None and [m["epoch"] for m in metrics_lines(out)][
        : saved.epoch + 1
    ] == list(range(saved.epoch + 1))
    if fault == "read-only":
        assert_same_params(params_of(out), before)
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True, timeout=60)
    moved = str(tmp_path / "moved")  # to a disk with room, then on
    shutil.copytree(out, moved)
    proc = run_in_a_child([*MNIST_JAX, "train", "--resume", moved, "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    whole = str(tmp_path / "whole")
    train_as_a_child(
        config.replace(num_epochs=2, keep_checkpoints=1) if fault == "read-only" else config, whole
    )
    assert_same_params(params_of(moved), params_of(whole))
