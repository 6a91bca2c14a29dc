"""The mnist-jax command end to end."""

import io
import json
import os
import subprocess
import sys

from mnist_jax.cli import main
from mnist_jax.console import ConsoleReporter

SMALL = ["--layer-sizes", "784,32,10", "--batch-size", "32", "--eval-batch-size", "64"]


def test_prepare_verifies_checksums_unless_told_not_to(idx_dir, tmp_path, capsys):
    assert main(["prepare", "--idx-dir", idx_dir, "--data-dir", str(tmp_path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "mnist" / "3.0.1").exists()
    assert main(["prepare", "--idx-dir", idx_dir, "--data-dir", str(tmp_path), "--skip-checksums"]) == 0
    assert (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").exists()


def test_compilation_cache_is_filled(data_dir, tmp_path):
    cache = tmp_path / "cache"
    cmd = [os.path.join(os.path.dirname(sys.executable), "mnist-jax"), "train", *SMALL, "--epochs", "1",
           "--data-dir", data_dir, "--compilation-cache", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert any(name.startswith("jit_scan_epoch") for name in os.listdir(cache))


def test_train_then_eval_through_the_console_script(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "mnist-jax"), "train", *SMALL,
           "--epochs", "2", "--data-dir", data_dir, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines.index("Epoch | Train accuracy | Test accuracy | Seconds | Examples/s")
    rows = [line.split("|") for line in lines[header + 1 : header + 4]]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    assert "\r" not in proc.stdout  # no progress bar when stdout is not a terminal
    summary = json.loads((out / "summary.json").read_text())
    assert [f"{100 * m['test_accuracy']:.2f}%" for m in summary["history"]] == [r[2].strip() for r in rows]

    proc = subprocess.run([cmd[0], "eval", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"test accuracy {100 * summary['final_test_accuracy']:.2f}%" in proc.stdout


def test_existing_run_is_refused(data_dir, tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    assert main(["train", *SMALL, "--data-dir", data_dir, "--out", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream, progress=True)
    reporter.steps_per_epoch = 10
    reporter.on_batch(1, 5)
    assert stream.getvalue() == "\r    1 [###############...............] 5/10"
