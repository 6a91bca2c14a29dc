"""Compilation: counting what a run compiles, and JAX's persistent compilation cache."""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax

CACHE_ENV = "MNIST_JAX_COMPILATION_CACHE"  # a folder for the cache, or "off"
_OFF = ("off", "none", "0", "false")
_COMPILED = "/jax/core/compile/backend_compile_duration"
_STAGES = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)
_FROM_CACHE = "/jax/compilation_cache/cache_hits"


@dataclass
class Compilations:
    """XLA programs the `with` block needed (`programs`: compiled, or loaded from the persistent
    cache, `from_cache` of them), and the seconds spent tracing, lowering, compiling and loading
    them.

    Counts every program JAX compiles in the process during the block, from any thread.
    """

    programs: int = 0
    from_cache: int = 0
    seconds: float = 0.0

    def __enter__(self) -> Compilations:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def _on_duration(self, event: str, seconds: float, **kwargs) -> None:
        if event == _COMPILED:
            self.programs += 1  # JAX times a cache lookup as a compile too
        if event == _COMPILED or event in _STAGES:
            self.seconds += seconds

    def _on_event(self, event: str, **kwargs) -> None:
        if event == _FROM_CACHE:
            self.from_cache += 1


def default_cache_dir() -> str | None:
    """Where the command keeps compiled programs: `$MNIST_JAX_COMPILATION_CACHE` (None if "off"),
    else `mnist_jax/jax-compilation` in `$XDG_CACHE_HOME`, else in `~/.cache`."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in _OFF else os.path.expanduser(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnist_jax", "jax-compilation")


def cache_settings(path: str) -> dict[str, object]:
    """JAX's settings that keep every compiled program in `path`, however short its compile or
    small its executable. A process that starts JAX later can take them as environment variables:
    each name in upper case."""
    return {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }


def enable_compilation_cache(path: str) -> None:
    """Keeps every compiled program in `path` (JAX's persistent compilation cache), so that later
    runs of the same programs load them instead of compiling."""
    for name, value in cache_settings(path).items():
        jax.config.update(name, value)
