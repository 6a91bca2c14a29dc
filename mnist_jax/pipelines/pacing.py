"""How many steps each compiled call runs, so that a stop request waits a few seconds at most.

A stop (SIGINT, SIGTERM) is answered between compiled calls, so the length of a call bounds the
wait. A `Pacer` sizes each call to last about `CALL_SECONDS` by the time per step of the call
before it; the first call of a process runs one step, and every call runs one at least. The
sizes never change what is computed: every span of steps runs in the same compiled program, so
only where a stop can fall depends on them. The processes of a run take the smallest size any
of them asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

STOP_SECONDS = 10.0  # the bound: a checkpoint within this of a signal, plus one step
CALL_SECONDS = STOP_SECONDS / 2  # a call's target length, the rest left to the checkpoint
T = TypeVar("T")


class Pacer:
    """Sizes the compiled calls of one kind (training steps, or evaluation batches)."""

    def __init__(self, seconds: float | None = None):
        self.seconds = CALL_SECONDS if seconds is None else seconds
        self.step_seconds: float | None = None  # the last call's time per step

    def next_span(self, remaining: int) -> int:
        """How many of the `remaining` steps the next call runs: the same in every process, the
        fewest any of them asks for."""
        steps = 1 if self.step_seconds is None else int(self.seconds / self.step_seconds)
        steps = max(1, min(remaining, steps))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            # the stop check's own all-gather (an int32 per process): nothing more to compile
            steps = int(np.min(multihost_utils.process_allgather(np.array([steps], np.int32))))
        return steps

    def timed(self, steps: int, program: Callable[..., T], *args) -> T:
        """`program(*args)` (a call of `steps` steps), waited for, its time per step kept for
        the next size."""
        start = time.perf_counter()
        result = jax.block_until_ready(program(*args))
        self.step_seconds = max(time.perf_counter() - start, 1e-9) / steps
        return result


def split_spans(done: dict[str, int], sizes: dict[str, int], steps: int) -> dict[str, tuple]:
    """Each split's `(start, stop)` batches for the next call: the first `steps` batches not
    `done`, taken through the splits in order (an empty span for the others)."""
    spans = {}
    for name, size in sizes.items():
        take = min(steps, size - done[name])
        spans[name] = (np.int32(done[name]), np.int32(done[name] + take))
        steps -= take
    return spans
