"""Joining JAX's distributed runtime: one process per host, set up by flags or a cluster
launcher."""

from __future__ import annotations

import os
import signal
import socket
import time

import jax

from mnist_jax.errors import ConfigError, DistributedError

_CLUSTER_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
)


def _wait_for_coordinator(address: str, timeout_seconds: float) -> None:
    """Waits until `address` accepts a TCP connection; DistributedError after the timeout."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"could not join the distributed runtime at {address} within "
                    f"{timeout_seconds} s: {e}"
                ) from None
            time.sleep(0.2)


def initialize_distributed(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    timeout_seconds: int = 60,
) -> bool:
    """Joins JAX's distributed runtime when asked to, or when a cluster launcher set it up.

    With no flags and no cluster variables this is a single-process run and nothing
    happens. Returns whether the runtime was initialized.
    """
    flags = (coordinator, num_processes, process_id)
    if all(v is None for v in flags):
        if not any(name in os.environ for name in _CLUSTER_VARIABLES):
            return False
        kwargs = {}  # JAX detects SLURM, Open MPI, Cloud TPU and $JAX_COORDINATOR_ADDRESS itself
    else:
        if None in flags:
            raise ConfigError("--coordinator, --num-processes and --process-id go together")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"process id {process_id} is not in [0, {num_processes}) processes")
        if ":" not in coordinator:
            raise ConfigError(f"coordinator must be HOST:PORT, got {coordinator!r}")
        kwargs = {
            "coordinator_address": coordinator,
            "num_processes": num_processes,
            "process_id": process_id,
        }
        if process_id != 0:
            # JAX aborts the whole process when the coordinator cannot be reached; check first.
            _wait_for_coordinator(coordinator, timeout_seconds)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout_seconds)
    except Exception as e:  # the runtime reports a timeout or refusal in several ways
        where = coordinator or os.environ.get(
            "JAX_COORDINATOR_ADDRESS", "the cluster's coordinator"
        )
        raise DistributedError(
            f"could not join the distributed runtime at {where} within {timeout_seconds} s: {e}"
        ) from e
    # The runtime takes over SIGTERM (for preemption notices); restore a plain exit so a
    # scheduler's or a user's `kill` still stops the process.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    return True
