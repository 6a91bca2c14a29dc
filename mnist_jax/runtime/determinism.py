"""Bit-reproducible runs: what a platform needs, set before JAX starts its backends.

A CPU's runs are bit-identical run to run already. On a GPU, XLA may pick non-deterministic
reductions and atomics unless `--xla_gpu_deterministic_ops=true` is in `XLA_FLAGS` when the GPU
backend starts; a TPU's runs are deterministic by design.
"""

from __future__ import annotations

import os

import jax

from mnist_jax.errors import ConfigError

GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def _backends_started() -> bool:
    from jax._src import xla_bridge  # JAX exposes no public way to ask this

    return xla_bridge.backends_are_initialized()


def make_deterministic() -> None:
    """Adds the GPU's deterministic-ops flag to `XLA_FLAGS` if JAX's backends have not started. If
    they have, without it, and a GPU is among them, the flag can no longer take effect: a
    ConfigError says to set it first."""
    flags = os.environ.get("XLA_FLAGS", "")
    if GPU_FLAG in flags.split():
        return
    if not _backends_started():
        os.environ["XLA_FLAGS"] = f"{flags} {GPU_FLAG}".strip()
        return
    if any(device.platform == "gpu" for device in jax.devices()):
        raise ConfigError(
            f"deterministic needs {GPU_FLAG} in XLA_FLAGS before JAX starts its GPU backend, "
            "which has started: set it in the environment, or train before anything else uses JAX"
        )
