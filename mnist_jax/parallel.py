"""Device meshes and shardings: one train step for 1 or N devices, batches split across them."""

from __future__ import annotations

import os
import signal
import socket
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_jax.config import ConfigError

BATCH_AXIS = "batch"


def make_mesh(num_devices: int | None = None, platform: str | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices of `platform` (default: all, of JAX's default)."""
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        raise ConfigError(f"no {platform} devices here ({e})") from None
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise ConfigError("with several processes the mesh spans every device; leave devices unset")
    num_devices = num_devices or len(devices)
    if num_devices > len(devices):
        raise ConfigError(f"devices is {num_devices}, but only {len(devices)} are available")
    # Auto axes: XLA places the collectives; the code only says how batches are split.
    return jax.make_mesh((num_devices,), (BATCH_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:num_devices])


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def split_along(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The array is split across the devices along `axis` (examples, or a batch's rows)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), BATCH_AXIS))


def rows_per_batch(batch_size: int, mesh: Mesh) -> int:
    """A batch's rows, padded up to a multiple of the device count (the padding is masked)."""
    num_devices = mesh.devices.size
    if batch_size < num_devices:
        raise ConfigError(f"batch size {batch_size} is smaller than the device count {num_devices}")
    return -(-batch_size // num_devices) * num_devices


def replicate(tree, mesh: Mesh):
    """A pytree of arrays, identical on every process, placed whole on every device of the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def process_part(size: int, process: int | None = None) -> int:
    """A process's part (default: this one's) of `size` rows split as evenly as possible."""
    count = jax.process_count()
    process = jax.process_index() if process is None else process
    return size // count + (process < size % count)


def place_split(images: np.ndarray, labels: np.ndarray, bounds: tuple[int, ...],
                mesh: Mesh) -> tuple[jax.Array, jax.Array, np.ndarray]:
    """A split as global arrays split across the mesh, built from each process's share.

    Every process pads its share to the same number of rows (a multiple of its device
    count) and contributes it; returns the arrays and, for every stored position in the
    split, its row in them.
    """
    shares = np.diff(bounds)
    local_devices = mesh.devices.size // jax.process_count()
    rows_per_process = -(-int(shares.max()) // local_devices) * local_devices
    local = [np.pad(a, [(0, rows_per_process - len(a))] + [(0, 0)] * (a.ndim - 1)) for a in (images, labels)]
    sharding = split_along(mesh)
    placed = [jax.make_array_from_process_local_data(sharding, a) for a in local]
    rows = np.concatenate([q * rows_per_process + np.arange(n) for q, n in enumerate(shares)])
    return placed[0], placed[1], rows.astype(np.int32)


class DistributedError(RuntimeError):
    """JAX's distributed runtime could not be set up."""


_CLUSTER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


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
                raise DistributedError(f"could not join the distributed runtime at {address} within "
                                       f"{timeout_seconds} s: {e}") from None
            time.sleep(0.2)


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None,
                           timeout_seconds: int = 60) -> bool:
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
        kwargs = {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
        if process_id != 0:
            # JAX aborts the whole process when the coordinator cannot be reached; check first.
            _wait_for_coordinator(coordinator, timeout_seconds)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout_seconds)
    except Exception as e:  # the runtime reports a timeout or refusal in several ways
        where = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "the cluster's coordinator")
        raise DistributedError(f"could not join the distributed runtime at {where} "
                               f"within {timeout_seconds} s: {e}") from e
    # The runtime takes over SIGTERM (for preemption notices); restore a plain exit so a
    # scheduler's or a user's `kill` still stops the process.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    return True
