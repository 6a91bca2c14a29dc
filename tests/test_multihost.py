"""Several processes on JAX's distributed runtime, simulated as local processes on the CPU."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.multihost import free_port, launch
from mnist_jax.runtime.parallel import simulated_cpu_env
from tests.helpers import worker

WORKER = worker("multihost")
SINGLE_ENV = simulated_cpu_env(4)


def load(path):
    with np.load(path) as f:
        return dict(f)


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipeline, model",
    [("device", "mlp"), ("stream", "mlp"), ("device", "tests.custom_models:tiny_cnn")],
)
def test_two_processes_train_together(data_dir, tmp_path, pipeline, model):
    multi, single = tmp_path / "multi", tmp_path / "single"
    results = launch(
        [data_dir, str(multi), pipeline, model],
        processes=2,
        devices_per_process=2,
        timeout=300,
        program=WORKER,
    )
    assert [r.returncode for r in results] == [0, 0], results[1].stderr[-3000:]
    subprocess.run(
        [*WORKER, data_dir, str(single), pipeline, model], env=SINGLE_ENV, check=True, timeout=300
    )
    p0, p1, one = (
        load(multi / "params0.npz"),
        load(multi / "params1.npz"),
        load(single / "params0.npz"),
    )
    assert p0.keys() == p1.keys() == one.keys()
    for name in one:
        np.testing.assert_array_equal(p0[name], p1[name])  # the processes agree exactly
    if pipeline == "device":  # the same global batches as one process on 4 devices
        for name in one:
            np.testing.assert_allclose(p0[name], one[name], rtol=1e-5, atol=1e-6)
    else:  # each process streams its own share, so the order differs: check the reported
        # accuracy itself
        import jax.numpy as jnp

        from mnist_jax import accuracy, data
        from mnist_jax.steps import normalise

        test = data.load(data_dir)["test"]
        images, labels = test.images, test.labels
        params = [(p0[f"W{i}"], p0[f"b{i}"]) for i in range(2)]
        assert p0["accuracies"][-1, 1] == pytest.approx(
            float(accuracy(params, normalise(images, jnp.float32), labels)), abs=1e-6
        )
    assert (multi / "run0" / "summary.json").exists() and not (multi / "run1").exists()


def test_unreachable_coordinator_fails_within_the_timeout():
    port = free_port()  # nothing listens there
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_jax.cli",
            "train",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            "1",
            "--distributed-timeout",
            "5",
        ],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert f"could not join the distributed runtime at 127.0.0.1:{port} within 5 s" in proc.stderr
    assert time.monotonic() - start < 90


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-processes", "2", "--process-id", "2"], "process id 2 is not in [0, 2) processes"),
        (["--num-processes", "0", "--process-id", "0"], "process id 0 is not in [0, 0) processes"),
        (["--num-processes", "2"], "--coordinator, --num-processes and --process-id go together"),
    ],
)
def test_inconsistent_process_flags_are_refused(flags, message):
    extra = [] if "--coordinator" in flags or len(flags) < 4 else ["--coordinator", "localhost:1"]
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_jax.cli", "train", *extra, *flags],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigterm_stops_processes_that_joined_the_runtime(data_dir, tmp_path):
    port = free_port()
    env = simulated_cpu_env(1)
    logs = [tmp_path / f"out{i}.txt" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_jax.cli",
                "train",
                "--layer-sizes",
                "784,16,10",
                "--batch-size",
                "32",
                "--epochs",
                "100000",
                "--data-dir",
                data_dir,
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=open(logs[i], "w"),  # noqa: SIM115 (the child holds it)
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while "Epoch |" not in logs[0].read_text():  # printed once both processes have joined
            assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()[
                -2000:
            ]
            time.sleep(0.5)
        for proc in procs:
            proc.terminate()
        assert [proc.wait(timeout=60) for proc in procs] == [143, 143]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
def test_a_preemption_of_one_process_stops_all_at_the_same_step(data_dir, tmp_path):
    """SIGTERM reaching process 1 alone: both processes stop after the same chunk (else one would
    wait forever in the next all-reduce), exit 143, and process 0's checkpoint resumes to the
    parameters of a run that was never stopped."""
    preempt = worker("preempt")
    flags = [
        "--layer-sizes",
        "784,16,10",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--eval-batch-size",
        "62",
        "--batches-per-chunk",
        "4",
        "--pipeline",
        "stream",
        "--data-dir",
        data_dir,
        "--quiet",
    ]
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    os.environ["STOP_PROCESS"] = "1"
    try:
        results = launch(
            [*flags, "--out", str(stopped)],
            processes=2,
            devices_per_process=2,
            timeout=300,
            program=preempt,
        )
    finally:
        del os.environ["STOP_PROCESS"]
    assert [r.returncode for r in results] == [143, 143], (
        results[0].stderr[-3000:] + results[1].stderr[-3000:]
    )
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stopped_by"] == "SIGTERM"
    from mnist_jax.runs import checkpoints

    saved = checkpoints.latest(str(stopped))
    # process 1 stopped after epoch 2's second chunk; so did 0
    assert (saved.epoch, saved.batches_done) == (1, 8)
    assert not (stopped / "run.lock").exists()

    resumed = launch(
        ["--resume", str(stopped), "--quiet"],
        processes=2,
        devices_per_process=2,
        timeout=300,
        program=preempt,
    )
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-3000:]
    assert [
        r.returncode
        for r in launch(
            [*flags, "--out", str(whole)],
            processes=2,
            devices_per_process=2,
            timeout=300,
            program=preempt,
        )
    ] == [0, 0]
    a, b = load(stopped / "params.npz"), load(whole / "params.npz")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
