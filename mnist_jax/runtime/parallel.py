"""The device mesh and shardings: one train step for 1 or N devices, every batch sharded across
them."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_jax.errors import ConfigError, DeviceError

BATCH_AXIS = "batch"


def simulated_cpu_env(devices: int) -> dict[str, str]:
    """The environment for a process whose CPU shows as `devices` devices: this process's, its
    `XLA_FLAGS` kept and the device count added (JAX reads it as its CPU backend starts)."""
    flags = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    ).strip()
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}


def make_mesh(num_devices: int | None = None, platform: str | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices of `platform` (default: all, of JAX's
    default)."""
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        raise DeviceError(f"no {platform} devices here ({e})") from None
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise DeviceError(
            "with several processes the mesh spans every device; leave devices unset"
        )
    num_devices = num_devices or len(devices)
    if num_devices > len(devices):
        raise DeviceError(f"devices is {num_devices}, but only {len(devices)} are available")
    # Auto axes: XLA places the collectives; the code only says how batches are split.
    return jax.make_mesh(
        (num_devices,),
        (BATCH_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices[:num_devices],
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The array is sharded across the devices along `axis` (a split's examples, or a batch's
    rows)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), BATCH_AXIS))


def rows_per_batch(batch_size: int, mesh: Mesh) -> int:
    """A batch's rows, padded up to a multiple of the device count (the padding is masked)."""
    num_devices = mesh.devices.size
    if batch_size < num_devices:
        raise ConfigError(
            f"batch size {batch_size} is smaller than the device count {num_devices}"
        )
    return -(-batch_size // num_devices) * num_devices


def replicate(tree, mesh: Mesh):
    """A pytree of arrays, identical on every process, placed whole on every device of the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )


def process_part(size: int, process: int | None = None) -> int:
    """A process's part (default: this one's) of `size` rows split as evenly as possible."""
    count = jax.process_count()
    process = jax.process_index() if process is None else process
    return size // count + (process < size % count)


def shard_split(
    images: np.ndarray, labels: np.ndarray, bounds: tuple[int, ...], mesh: Mesh
) -> tuple[jax.Array, jax.Array, np.ndarray]:
    """A dataset split as global arrays sharded across the mesh, built from each process's share.

    Every process pads its share to the same number of rows (a multiple of its device
    count) and contributes it; returns the arrays and, for every stored position in the
    split, its row in them.
    """
    shares = np.diff(bounds)
    local_devices = mesh.devices.size // jax.process_count()
    rows_per_process = -(-int(shares.max()) // local_devices) * local_devices
    local = [
        np.pad(a, [(0, rows_per_process - len(a))] + [(0, 0)] * (a.ndim - 1))
        for a in (images, labels)
    ]
    sharding = batch_sharding(mesh)
    placed = [jax.make_array_from_process_local_data(sharding, a) for a in local]
    rows = np.concatenate([q * rows_per_process + np.arange(n) for q, n in enumerate(shares)])
    return placed[0], placed[1], rows.astype(np.int32)
