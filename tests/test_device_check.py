"""The device check (`benchmarks/device_check.py`) on this machine: its steps in order under their
caps, each step's process group killed whole, no JAX in its own process, and its refusal to pass
without an accelerator."""

import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from benchmarks import device_check
from mnist_jax.data import is_prepared
from tests.conftest import cpu_only
from tests.helpers import ROOT, run_in_a_child

# The check as a child process, reporting at its end whether it imported JAX itself.
CHECK = [
    sys.executable,
    "-c",
    "import sys; from benchmarks.device_check import main; status = main(sys.argv[1:]); "
    "print('jax imported:', 'jax' in sys.modules); sys.exit(status)",
]


# Caps no step reaches on this shared CPU: the tests check the steps, not the default caps.
LOOSE_CAPS = [f"--cap={name}=600" for name in device_check.CAPS]
# What the issue asks the device subset to cover, by test file.
AREAS = ["training", "pipelines", "models", "model_state", "precision", "resume", "open_harness"]


# the check, run as a child: its steps may take the loose caps the tests give them
in_a_child = functools.partial(run_in_a_child, timeout=600)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, killed and not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not cpu_only(), reason="an accelerator is here")
def test_without_an_accelerator_it_fails_at_the_fingerprint_saying_so(tmp_path):
    done = in_a_child([*CHECK, "--out", str(tmp_path), "--steps", "seed", *LOOSE_CAPS])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"device check failed: JAX found no accelerator, only the CPU (see "
        f"{tmp_path / 'fingerprint.log'}); --allow-cpu checks on the CPU"
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        list(summary["steps"]) == ["fingerprint"] and summary["fingerprint"]["accelerators"] == []
    )
    assert not (tmp_path / "seed.log").exists() and "jax imported: False" in done.stdout


@pytest.mark.parametrize(
    "steps", [["compare"], pytest.param(["seed", "cnn"], marks=pytest.mark.slow)]
)
def test_with_allow_cpu_each_step_runs_in_order_and_is_recorded(
    tmp_path, idx_dir, data_dir, steps
):
    # What `prepare` and `bench` would make: the synthetic files' dataset (whose checksums are not
    # MNIST's), and as this run's bench the committed result, said to be from another machine.
    shutil.copytree(data_dir, tmp_path / "tfds")
    bench = json.loads(device_check.BASELINE.read_text())
    baseline_cpu = bench["fingerprint"]["cpu"]["model"]
    bench["fingerprint"]["cpu"]["model"] = "Another CPU"
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text(json.dumps(bench))
    done = in_a_child(
        [*CHECK, "--allow-cpu", "--idx-dir", idx_dir, "--out", str(tmp_path), "--steps", *steps]
        + LOOSE_CAPS
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jax imported: False" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["steps"]) == ["fingerprint", *steps]
    commands = device_check.step_commands(tmp_path)
    for name, record in summary["steps"].items():
        assert record["command"] == commands[name] and record["status"] == 0
        assert record["cap_seconds"] == 600
        assert record["seconds"] > 0 and (tmp_path / f"{name}.log").exists()
    assert summary["fingerprint"]["cpu"]["cores"] == os.cpu_count()
    assert summary["fingerprint"] == json.loads((tmp_path / "fingerprint.json").read_text())
    if "compare" in steps:
        table = (tmp_path / "compare" / "compare.md").read_text()
        assert table in (tmp_path / "compare.log").read_text() and "| 1.00 |" in table
        assert f"**{baseline_cpu}" in table and "**Another CPU" in table
    for run in set(steps) & {"seed", "cnn"}:
        assert json.loads((tmp_path / run / "summary.json").read_text())["status"] == "completed"
    if "cnn" in steps:
        config = json.loads((tmp_path / "cnn" / "config.json").read_text())
        assert config["model"] == "cnn" and config["num_epochs"] == 1


@pytest.mark.slow
def test_the_prepare_step_makes_the_dataset_of_the_real_files_in_out(tmp_path, real_idx_dir):
    done = in_a_child(
        [*CHECK, "--allow-cpu", "--idx-dir", real_idx_dir, "--out", str(tmp_path)]
        + ["--steps", "prepare", *LOOSE_CAPS]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert is_prepared(str(tmp_path / "tfds"))
    assert (
        json.loads((tmp_path / "summary.json").read_text())["steps"]["prepare"]["cap_seconds"]
        == 600
    )


@pytest.mark.parametrize("cap, status", [(5, "timed out"), (60, 0)])
def test_a_steps_whole_process_group_ends_with_it(tmp_path, cap, status):
    """A step that starts a sleeping grandchild, then outlives its cap or exits at once: the
    grandchild is killed either way."""
    linger = "time.sleep(60)" if status == "timed out" else "pass"
    command = [
        sys.executable,
        "-c",
        "import subprocess, time; grandchild = subprocess.Popen(['sleep', '3600']); "
        f"print(grandchild.pid, flush=True); {linger}",
    ]
    env = device_check.child_environment(tmp_path, None)
    record = device_check.run_step("sleeper", command, cap, tmp_path, env)
    assert record["status"] == status and record["cap_seconds"] == cap
    grandchild = int((tmp_path / "sleeper.log").read_text().split()[0])
    for _ in range(100):  # init reaps the killed grandchild soon after
        if not alive(grandchild):
            break
        time.sleep(0.05)
    assert not alive(grandchild)


def test_every_child_gets_the_data_folders_and_no_preallocation(tmp_path, idx_dir):
    names = ["XLA_PYTHON_CLIENT_PREALLOCATE", "TFDS_DATA_DIR", "MNIST_JAX_IDX_DIR"]
    command = [sys.executable, "-c", f"import os; print(*(os.environ[n] for n in {names}))"]
    env = device_check.child_environment(tmp_path, os.path.relpath(idx_dir))
    assert device_check.run_step("env", command, 60, tmp_path, env)["status"] == 0
    assert (tmp_path / "env.log").read_text().split() == [
        "false",
        str(tmp_path / "tfds"),
        str(Path(idx_dir).resolve()),
    ]


def test_the_caps_fit_five_minutes_and_each_can_be_changed():
    assert list(device_check.CAPS) == list(device_check.step_commands(ROOT))
    assert sum(device_check.CAPS.values()) <= 300
    assert device_check.parse_caps(["tests=200", "seed=1.5"]) == {
        **device_check.CAPS,
        "tests": 200,
        "seed": 1.5,
    }
    for wrong in ["test=200", "tests=", "tests=soon", "tests=0"]:
        with pytest.raises(SystemExit, match=f"--cap {wrong}: not STEP=SECONDS, the STEP one of"):
            device_check.parse_caps([wrong])


@pytest.mark.slow  # it collects the whole suite
def test_the_tests_step_selects_a_subset_from_each_area():
    """`pytest -m device`: training, both pipelines, the CNN forms with BatchNorm, a model's state,
    precision, checkpoints and resume, and the open harness; not the whole suite."""
    found = in_a_child(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-n", "0", "-m", "device"]
    )
    assert found.returncode == 0, found.stdout[-2000:]
    files = {line.split("::")[0] for line in found.stdout.splitlines() if "::" in line}
    assert {f"tests/test_{name}.py" for name in AREAS} <= files
    counts = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", found.stdout)
    assert counts and int(counts[1]) > 0 and int(counts[3]) > 0
