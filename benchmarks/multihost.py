"""Launches a P-process run on this machine, to try the multi-host path:

    python -m benchmarks.multihost --processes 2 --devices-per-process 2 \
        -- --epochs 1 --out runs/mh

Each process is `mnist-jax train ARGS --coordinator localhost:PORT --num-processes P
--process-id I`, with XLA simulating its CPU devices. Process 0's output is printed; every
wait is bounded, and processes are stopped with SIGKILL on timeout (a process that has
joined JAX's distributed runtime may not stop on SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time

from mnist_jax.runtime.parallel import simulated_cpu_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = [sys.executable, "-m", "mnist_jax.cli", "train"]


def launch(
    train_args: list[str],
    processes: int,
    devices_per_process: int,
    timeout: float = 600,
    program: list[str] = TRAIN,
) -> list[subprocess.CompletedProcess]:
    """Runs the processes to completion (or kills them all at `timeout`); returns their results."""
    port = free_port()
    env = simulated_cpu_env(devices_per_process)
    command = [
        *program,
        *train_args,
        "--coordinator",
        f"localhost:{port}",
        "--num-processes",
        str(processes),
    ]
    procs = [
        subprocess.Popen(
            command + ["--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        raise
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.multihost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("train_args", nargs="*", help="mnist-jax train arguments, after --")
    args = parser.parse_args(argv)
    results = launch(args.train_args, args.processes, args.devices_per_process, args.timeout)
    print(results[0].stdout, end="")
    for i, result in enumerate(results):
        if result.returncode:
            print(
                f"process {i} exited with {result.returncode}:\n{result.stderr[-2000:]}",
                file=sys.stderr,
            )
    return max(abs(r.returncode) for r in results)


if __name__ == "__main__":
    sys.exit(main())
