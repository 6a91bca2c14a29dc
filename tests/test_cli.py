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


def test_a_second_run_loads_its_programs_from_the_compilation_cache(data_dir, tmp_path):
    cache = tmp_path / "cache"
    summaries = []
    for run in ("first", "second"):
        cmd = [os.path.join(os.path.dirname(sys.executable), "mnist-jax"), "train", *SMALL, "--epochs", "1",
               "--data-dir", data_dir, "--compilation-cache", str(cache), "--out", str(tmp_path / run)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        summaries.append(json.loads((tmp_path / run / "summary.json").read_text()))
    first, second = summaries
    assert (first["compilations"], first["compilations_from_cache"]) == (3, 0)  # a fresh cache: all compiled
    assert (second["compilations"], second["compilations_from_cache"]) == (3, 3)  # then all loaded
    def scores(summary):
        return [(m["train_accuracy"], m["test_accuracy"], m["train_loss"], m["test_loss"]) for m in summary["history"]]

    assert scores(second) == scores(first)


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


def test_version_is_the_installed_packages(capsys):
    import importlib.metadata

    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mnist-jax {importlib.metadata.version('mnist-jax')}"


def test_eval_of_a_folder_that_is_not_a_finished_run_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mnist-jax eval: error: {tmp_path} holds no run (no config.json)"
    (tmp_path / "config.json").write_text(json.dumps({"num_epochs": 2}))  # a run that never finished
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnist-jax eval: error: {tmp_path} has no params.npz") and "\n" not in err


def test_each_subcommand_takes_its_own_flags(data_dir, tmp_path, capsys):
    import pytest

    from mnist_jax import Config
    from mnist_jax.sweep import sweep

    for flags in (["--checkpoint-every", "2"], ["--keep-checkpoints", "1"], ["--pipeline", "stream"]):
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", "--seeds", "2", *flags])  # a sweep writes no checkpoints, trains on the device path
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert main(["sweep", *SMALL, "--data-dir", data_dir, "--seeds", "2", "--epochs", "2", "--quiet"]) == 0
    assert "\r" not in capsys.readouterr().err
    seen = []
    sweep(Config(layer_sizes=(784, 8, 10), num_epochs=3, data_dir=data_dir), [0, 1],
          on_epoch=lambda epoch, num_epochs: seen.append((epoch, num_epochs)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_platform_cpu_trains_on_the_cpu_whatever_the_default(data_dir, tmp_path):
    import jax

    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--data-dir", data_dir, "--platform", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cpu = jax.devices("cpu")
    assert summary["device"] == f"cpu:{cpu[0].device_kind}" and summary["num_devices"] == len(cpu)
    assert summary["config"]["platform"] == "cpu" and summary["final_test_accuracy"] > 0.5
