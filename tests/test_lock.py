"""The run folder's lock: a live run holds its folder, a dead one's stale lock is recovered."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from mnist_jax.cli import main
from tests.helpers import MNIST_JAX, TINY_FLAGS, child_env


def test_a_live_run_holds_its_folder_and_a_dead_one_does_not(data_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    holder = subprocess.Popen(
        [
            *MNIST_JAX,
            "train",
            *TINY_FLAGS,
            "--epochs",
            "5000",
            "--data-dir",
            data_dir,
            "--out",
            out,
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(out, "checkpoints")) and time.monotonic() < deadline:
            assert holder.poll() is None, holder.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        assert os.path.exists(os.path.join(out, "checkpoints")), (
            "the holding run wrote no checkpoint in 120 s"
        )
        for second in (
            ["--resume", out],
            [*TINY_FLAGS, "--data-dir", data_dir, "--out", out, "--overwrite"],
        ):
            assert main(["train", *second, "--quiet"]) == 2
            assert f"is in use by process {holder.pid}" in capsys.readouterr().err
        assert os.path.exists(os.path.join(out, "config.json"))  # --overwrite removed nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert json.loads(Path(out, "run.lock").read_text())["pid"] == holder.pid  # left behind
    assert (
        main(
            [
                "train",
                *TINY_FLAGS,
                "--epochs",
                "1",
                "--data-dir",
                data_dir,
                "--out",
                out,
                "--overwrite",
                "--quiet",
            ]
        )
        == 0
    )
    assert f"recovered a stale lock on {out} from process {holder.pid}" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "run.lock"))
