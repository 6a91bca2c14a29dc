"""Where a run ran: the device kind and count, package versions and the command line; a
benchmark's machine fingerprint."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax
import jax.extend.backend

_PACKAGES = (
    "mnist-jax",
    "jax",
    "jaxlib",
    "optax",
    "numpy",
    "tensorflow-cpu",
    "tensorflow",
    "tensorflow-datasets",
)


def environment(mesh: jax.sharding.Mesh | None = None) -> dict:
    """The device kind and count (the mesh's, else the default device's), versions and command."""
    devices = list(mesh.devices.flat) if mesh is not None else list(jax.numpy.zeros(()).devices())
    device = devices[0]
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "num_devices": len(devices),
        "versions": versions,
        "command": sys.argv,
    }


def fingerprint() -> dict:
    """The machine a benchmark ran on, to tell results from different machines apart: the CPU's
    model and core count, each accelerator's kind and memory, the platform versions JAX reports
    (CUDA and driver, or libtpu), package versions, the git commit of a checkout, the date (UTC)
    and `XLA_FLAGS`."""
    accelerators = []
    for device in jax.devices():
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            accelerators.append(
                {
                    "platform": device.platform,
                    "kind": device.device_kind,
                    "memory_bytes": stats.get("bytes_limit"),
                }
            )
    platforms = {
        name: backend.platform_version for name, backend in jax.extend.backend.backends().items()
    }
    return {
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count()},
        "accelerators": accelerators,
        "platform_versions": platforms,
        "versions": environment()["versions"],
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what Python's platform says."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The commit of the git checkout this package runs from (None if installed, or no git)."""
    # above mnist_jax/
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(checkout, ".git")):
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=10
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None
