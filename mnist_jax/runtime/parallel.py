"""The device meshes and shardings: one train step for 1 or N devices, every batch sharded across
them; a population of models (a sweep or grid) split across a process's devices along its model
axis."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mnist_jax.errors import ConfigError, DeviceError

BATCH_AXIS = "batch"
MODEL_AXIS = "model"


def simulated_cpu_env(devices: int) -> dict[str, str]:
    """The environment for a process whose CPU shows as `devices` devices: this process's, its
    `XLA_FLAGS` kept and the device count added (JAX reads it as its CPU backend starts)."""
    flags = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    ).strip()
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}


def _platform_devices(platform: str | None) -> list:
    try:
        return jax.devices(platform)
    except RuntimeError as e:
        raise DeviceError(f"no {platform} devices here ({e})") from None


def _first(devices: list, num_devices: int | None) -> list:
    num_devices = num_devices or len(devices)
    if num_devices > len(devices):
        raise DeviceError(f"devices is {num_devices}, but only {len(devices)} are available")
    return devices[:num_devices]


def make_mesh(num_devices: int | None = None, platform: str | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices of `platform` (default: all, of JAX's
    default)."""
    devices = _platform_devices(platform)
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise DeviceError(
            "with several processes the mesh spans every device; leave devices unset"
        )
    devices = _first(devices, num_devices)
    # Auto axes: XLA places the collectives; the code only says how batches are split.
    return jax.make_mesh(
        (len(devices),), (BATCH_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def population_devices(num_devices: int | None = None, platform: str | None = None) -> list:
    """The devices a population of models (a sweep or grid) may spread over: the first
    `num_devices` (default: all) of `platform` (default: JAX's). A population trains in a
    single process: raises DeviceError in one of several."""
    if jax.process_count() > 1:
        raise DeviceError(
            "sweeps and grids run in a single process, over its own devices; this is process "
            f"{jax.process_index()} of {jax.process_count()}: run them without the "
            "distributed runtime"
        )
    return _first(_platform_devices(platform), num_devices)


class Spread(NamedTuple):
    """How a population of models lies on devices: `devices` used, `per_device` models on each."""

    devices: int
    per_device: int

    @property
    def models(self) -> int:
        """The places on the devices: the population's, then the last device's spare ones."""
        return self.devices * self.per_device


def spread(num_models: int, num_devices: int) -> Spread:
    """`num_models` models over at most `num_devices` devices: the fewest models per device those
    devices allow (they set the training time), over the fewest devices that hold them at that
    count. The places left, all on the last device, are spare (for copies): 7 models on 4
    devices are 2 a device on 4, one place spare; 6 are 2 a device on 3, none spare."""
    per_device = -(-num_models // num_devices)
    return Spread(-(-num_models // per_device), per_device)


def model_mesh(num_models: int, devices: list) -> Mesh:
    """The mesh of a population of `num_models` models (see `spread`) over the first of
    `devices`: its model axis over the devices used, its batch axis of size 1, so that every
    device holds whole batches (and whole dataset splits) for the models it trains."""
    used = spread(num_models, len(devices)).devices
    return jax.make_mesh(
        (used, 1),
        (MODEL_AXIS, BATCH_AXIS),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices[:used],
    )


def model_sharding(mesh: Mesh) -> NamedSharding:
    """The array's leading axis, one entry per model, is split across the mesh's model axis."""
    return NamedSharding(mesh, PartitionSpec(MODEL_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The array is sharded across the devices along `axis` (a split's examples, or a batch's
    rows)."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), BATCH_AXIS))


def rows_per_batch(batch_size: int, mesh: Mesh) -> int:
    """A batch's rows, padded up to a multiple of the devices a batch is split across (the
    padding is masked)."""
    num_devices = mesh.shape[BATCH_AXIS]
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
    local_devices = mesh.shape[BATCH_AXIS] // jax.process_count()
    rows_per_process = -(-int(shares.max()) // local_devices) * local_devices
    local = [
        np.pad(a, [(0, rows_per_process - len(a))] + [(0, 0)] * (a.ndim - 1))
        for a in (images, labels)
    ]
    sharding = batch_sharding(mesh)
    placed = [jax.make_array_from_process_local_data(sharding, a) for a in local]
    rows = np.concatenate([q * rows_per_process + np.arange(n) for q, n in enumerate(shares)])
    return placed[0], placed[1], rows.astype(np.int32)
