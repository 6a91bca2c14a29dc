"""Joining JAX's distributed runtime: one process per host, set up by flags or a cluster
launcher."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Mapping

import jax

from mnist_jax.errors import ConfigError, DistributedError

# Launchers whose variables JAX reads itself (SLURM is handled below).
_OTHER_LAUNCHER_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
)
# What JAX's SLURM detection needs beside SLURM_JOB_ID (jax/_src/clusters/slurm_cluster.py):
# srun sets them for each task of a job step; a shell that salloc opens lacks some of them.
_SLURM_STEP_VARIABLES = ("SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
# jax.distributed.initialize's own default, which the CLI's --distributed-timeout repeats.
DEFAULT_TIMEOUT_SECONDS = 300


def _launched_by_cluster(environ: Mapping[str, str]) -> bool:
    """Whether a cluster launcher started this process as one of several; ConfigError for a
    shell inside a SLURM allocation of several tasks but outside a job step."""
    if any(name in environ for name in _OTHER_LAUNCHER_VARIABLES):
        return True
    if "SLURM_JOB_ID" not in environ:
        return False
    if environ.get("SLURM_NTASKS") == "1":
        return False  # one task: a single process over every local device, no runtime
    missing = [name for name in _SLURM_STEP_VARIABLES if name not in environ]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"SLURM_JOB_ID is set but {', '.join(missing)} {verb} not: this shell is "
            "inside a SLURM allocation but not a job step; launch with `srun mnist-jax ...`, "
            "or unset SLURM_JOB_ID for a single-process run"
        )
    return True


def _slurm_local_device_ids(environ: Mapping[str, str]) -> list[int] | None:
    """`[]` (every device the process sees) for a SLURM job step of one task per node; None
    (JAX's choice) otherwise.

    Under SLURM, JAX restricts each process to the one local device numbered $SLURM_LOCALID,
    right for one task per GPU but a waste of all but the first GPU for one task per node.
    An empty list is not None, so JAX keeps it, and falsy, so JAX restricts nothing.
    """
    if "JAX_LOCAL_DEVICE_IDS" in environ or "OMPI_COMM_WORLD_SIZE" in environ:
        return None  # the user's own choice, or Open MPI's layout, which JAX reads first
    if any(name not in environ for name in ("SLURM_JOB_ID", *_SLURM_STEP_VARIABLES)):
        return None  # JAX does not detect SLURM
    if environ["SLURM_NTASKS"] != environ.get("SLURM_STEP_NUM_NODES"):
        return None
    return []


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
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
) -> bool:
    """Joins JAX's distributed runtime when asked to, or when a cluster launcher set it up.

    With no flags and no cluster variables this is a single-process run and nothing
    happens; so is a SLURM job of one task, which needs no runtime to use every local device.
    A SLURM job step of one task per node gives each process every device it sees (JAX
    alone would give it one). ConfigError for a shell inside a SLURM allocation but outside a
    job step (no srun), DistributedError when the runtime cannot be joined within
    `timeout_seconds`. Returns whether the runtime was initialized.
    """
    flags = (coordinator, num_processes, process_id)
    if all(v is None for v in flags):
        if not _launched_by_cluster(os.environ):
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
    local_device_ids = _slurm_local_device_ids(os.environ)
    if local_device_ids is not None:
        kwargs["local_device_ids"] = local_device_ids
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
