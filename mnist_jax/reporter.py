"""The hooks the training loop calls as a run goes: a `Reporter` base that ignores them all."""

from __future__ import annotations

import warnings

from mnist_jax.config import Config
from mnist_jax.results import EpochMetrics, Result


class Reporter:
    """Override the hooks you need (`console.ConsoleReporter` prints the table)."""

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None: ...
    def on_batch(self, epoch: int, batches_done: int) -> None: ...
    def on_epoch(self, metrics: EpochMetrics) -> None: ...
    def on_end(self, result: Result) -> None: ...

    def on_warning(self, message: str) -> None:
        """Something was recovered from (a stale lock, a damaged checkpoint)."""
        warnings.warn(message, stacklevel=2)
