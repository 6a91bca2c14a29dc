"""Device meshes and shardings: one train step for 1 or N devices, batches split across them."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_jax.config import ConfigError

BATCH_AXIS = "batch"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (default: all of them)."""
    devices = jax.devices()
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


def pad_rows(array: np.ndarray, mesh: Mesh) -> np.ndarray:
    """`array` with zero rows appended up to a multiple of the device count."""
    padding = -len(array) % mesh.devices.size
    return np.pad(array, [(0, padding)] + [(0, 0)] * (array.ndim - 1))
