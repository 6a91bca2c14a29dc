"""Where a run ran: the device kind and count, package versions and the command line."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import sys

import jax

_PACKAGES = ("mnist-jax", "jax", "jaxlib", "optax", "numpy", "tensorflow-cpu", "tensorflow",
             "tensorflow-datasets")


def environment(mesh: jax.sharding.Mesh | None = None) -> dict:
    """The device kind and count (the mesh's, else the default device's), versions and command."""
    devices = list(mesh.devices.flat) if mesh is not None else list(jax.numpy.zeros(()).devices())
    device = devices[0]
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {"device": f"{device.platform}:{device.device_kind}", "num_devices": len(devices),
            "versions": versions, "command": sys.argv}
