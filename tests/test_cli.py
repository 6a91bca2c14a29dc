"""The `mnist-jax` command end to end: every command's help, train and eval through the console
script, refusals, the progress bar, each subcommand's own flags."""

import importlib.metadata
import io
import json
import os
import sys

import jax
import pytest

from mnist_jax import Config
from mnist_jax.cli import main
from mnist_jax.reporters import ConsoleReporter
from mnist_jax.sweep import sweep
from tests.helpers import TINY_FLAGS, run_in_a_child


def test_train_then_eval_through_the_console_script(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "mnist-jax"),
        "train",
        *TINY_FLAGS,
        "--epochs",
        "2",
        "--data-dir",
        data_dir,
        "--out",
        str(out),
    ]
    proc = run_in_a_child(cmd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines.index("Epoch | Train accuracy | Test accuracy | Seconds | Examples/s")
    rows = [line.split("|") for line in lines[header + 1 : header + 4]]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    assert "\r" not in proc.stdout  # no progress bar when stdout is not a terminal
    summary = json.loads((out / "summary.json").read_text())
    assert [f"{100 * m['test_accuracy']:.2f}%" for m in summary["history"]] == [
        r[2].strip() for r in rows
    ]

    proc = run_in_a_child([cmd[0], "eval", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert f"test accuracy {100 * summary['final_test_accuracy']:.2f}%" in proc.stdout


def test_existing_run_is_refused(data_dir, tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{}")
    assert main(["train", *TINY_FLAGS, "--data-dir", data_dir, "--out", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream, progress=True)
    reporter.steps_per_epoch = 10
    reporter.on_batch(1, 5)
    assert stream.getvalue() == "\r    1 [###############...............] 5/10"


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert (
        capsys.readouterr().out.strip() == f"mnist-jax {importlib.metadata.version('mnist-jax')}"
    )


def test_eval_of_a_folder_that_is_not_a_finished_run_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mnist-jax eval: error: {tmp_path} holds no run (no config.json)"
    # a run that never finished
    (tmp_path / "config.json").write_text(json.dumps({"num_epochs": 2}))
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"mnist-jax eval: error: {tmp_path} has no params.npz") and "\n" not in err
    )


def test_each_subcommand_takes_its_own_flags(data_dir, tmp_path, capsys):
    for flags in (
        ["--checkpoint-every", "2"],
        ["--keep-checkpoints", "1"],
        ["--pipeline", "stream"],
    ):
        with pytest.raises(SystemExit) as exit_:
            # a sweep writes no checkpoints, trains on the device path
            main(["sweep", "--seeds", "2", *flags])
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert (
        main(
            [
                "sweep",
                *TINY_FLAGS,
                "--data-dir",
                data_dir,
                "--seeds",
                "2",
                "--epochs",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert "\r" not in capsys.readouterr().err
    seen = []
    sweep(
        Config(layer_sizes=(784, 8, 10), num_epochs=3, data_dir=data_dir),
        [0, 1],
        on_epoch=lambda epoch, num_epochs: seen.append((epoch, num_epochs)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_platform_cpu_trains_on_the_cpu_whatever_the_default(data_dir, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TINY_FLAGS,
                "--epochs",
                "1",
                "--data-dir",
                data_dir,
                "--platform",
                "cpu",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    cpu = jax.devices("cpu")
    assert summary["device"] == f"cpu:{cpu[0].device_kind}" and summary["num_devices"] == len(cpu)
    assert summary["config"]["platform"] == "cpu" and summary["final_test_accuracy"] > 0.5


COMMANDS = ["", "train", "sweep", "report", "eval", "bench", "bench compare", "prepare"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_prints_and_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"usage: mnist-jax {command}".rstrip())
    if command == "train":  # every setting's flag, with its help from Config's field
        assert (
            "--layer-sizes" in printed
            and "the MLP's layer widths, from 784 to 10 (default: 784,200,100,10)"
            in " ".join(printed.split())
        )
    if command == "":
        assert "95% CI" in printed  # the sweep's help, which argparse once read as a format


def test_the_console_script_prints_help(tmp_path):
    proc = run_in_a_child(
        [os.path.join(os.path.dirname(sys.executable), "mnist-jax"), "--help"], timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: mnist-jax") and not proc.stderr
