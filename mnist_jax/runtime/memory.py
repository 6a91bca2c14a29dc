"""A run's memory needs, estimated and checked before anything is allocated."""

from __future__ import annotations

import math
import os

import jax
from jax.sharding import Mesh

from mnist_jax.config import Config
from mnist_jax.errors import ConfigError
from mnist_jax.steps import CheckedModel, Steps, make_steps

GIB = 2**30
_DATA_BYTES = 70_000 * 28 * 28  # every MNIST image as uint8, in device memory on the device path


def estimate_bytes(
    config: Config,
    num_devices: int = 1,
    num_models: int = 1,
    steps: Steps | CheckedModel | None = None,
) -> dict[str, int]:
    """Approximate peak bytes per device, by part: a rough upper bound, not an exact count.

    Parameter counts come from the model's shapes (`jax.eval_shape`), activations from the
    values its forward pass computes per image (its traced program); nothing is allocated.
    """
    steps = make_steps(config) if steps is None else steps
    itemsize = 8 if config.dtype == "float64" else 4
    num_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(steps.params_shape))
    num_state = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(steps.state_shape))
    per_example = steps.activations_per_example
    rows, eval_rows = (
        math.ceil(n / num_devices) for n in (config.batch_size, config.eval_batch_size)
    )
    return {
        # parameters, gradients, the update and two optimizer moments, per model
        "training state": 5 * num_params * itemsize * num_models,
        # the model's state (BatchNorm's statistics, say), as read and as updated, per model
        "model state": 2 * num_state * itemsize * num_models,
        # the forward pass's values, their gradients and a spare, per model
        "activations": 3 * rows * per_example * itemsize * num_models,
        # the forward pass's values (no gradients), per model
        "evaluation": eval_rows * per_example * itemsize * num_models,
        "data": math.ceil(_DATA_BYTES / num_devices) if config.pipeline == "device" else 0,
    }


def available_bytes(mesh: Mesh) -> int | None:
    """Memory one device of the mesh may use: its own limit, or for CPU devices, which share
    the host's memory, the host's available memory over the local devices; None if unknown."""
    device = mesh.devices.flat[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    local = sum(d.process_index == device.process_index for d in mesh.devices.flat)
    host = _host_available_bytes()
    return host // local if host else None


def _host_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None


def check_fits(
    config: Config, mesh: Mesh, num_models: int = 1, steps: Steps | CheckedModel | None = None
) -> None:
    """Raises ConfigError if the estimate exceeds what a device has available."""
    parts = estimate_bytes(config, mesh.devices.size, num_models, steps)
    need, have = sum(parts.values()), available_bytes(mesh)
    if have is not None and need > have:
        breakdown = ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts.items())
        raise ConfigError(
            f"this run needs about {need / GIB:.1f} GiB per device ({breakdown} GiB), but "
            f"{mesh.devices.flat[0].device_kind} has {have / GIB:.1f} GiB available: "
            "use narrower layers or a smaller batch size"
        )


def models_that_fit(
    config: Config, mesh: Mesh, steps: Steps | CheckedModel | None = None
) -> int | None:
    """How many models of `config` one compiled program can train together on a device, by the
    estimate (None if the device's memory is unknown)."""
    have = available_bytes(mesh)
    if have is None:
        return None
    one, two = (sum(estimate_bytes(config, mesh.devices.size, n, steps).values()) for n in (1, 2))
    return max(0, (have - (2 * one - two)) // (two - one))
