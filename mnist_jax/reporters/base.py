"""The hooks the training loop calls as a run goes: `Reporter`, whose hooks do nothing, and
`Reporters`, several reporters as one."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from mnist_jax.config import Config
from mnist_jax.records import EpochMetrics, Result


class Reporter:
    """Override the hooks you need (`ConsoleReporter` prints the table, `TensorBoardReporter`
    writes event files)."""

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None:
        """The run is set up and about to train (or go on training)."""

    def on_history(self, history: Sequence[EpochMetrics]) -> None:
        """A resumed run's epochs so far, from its checkpoint; by default each goes to
        `on_epoch`."""
        for metrics in history:
            self.on_epoch(metrics)

    def on_batch(self, epoch: int, batches_done: int) -> None:
        """`batches_done` batches of `epoch` are trained (called after each compiled call)."""

    def on_steps(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        """The training loss of each step a compiled call ran, from the epoch's step `first_step`
        (0-based)."""

    def on_epoch(self, metrics: EpochMetrics) -> None:
        """An epoch's metrics over the full splits (epoch 0: before training)."""

    def on_end(self, result: Result) -> None:
        """The run ended: completed, interrupted or diverged."""

    def on_warning(self, message: str) -> None:
        """Something was recovered from (a stale lock, a damaged checkpoint)."""
        warnings.warn(message, stacklevel=2)


class Reporters(Reporter):
    """Several reporters as one: each hook calls every reporter's, in order."""

    def __init__(self, reporters: Sequence[Reporter]):
        self.reporters = list(reporters)

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None:
        for reporter in self.reporters:
            reporter.on_start(config, environment, steps_per_epoch)

    def on_history(self, history: Sequence[EpochMetrics]) -> None:
        for reporter in self.reporters:
            reporter.on_history(history)

    def on_batch(self, epoch: int, batches_done: int) -> None:
        for reporter in self.reporters:
            reporter.on_batch(epoch, batches_done)

    def on_steps(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        for reporter in self.reporters:
            reporter.on_steps(epoch, first_step, losses)

    def on_epoch(self, metrics: EpochMetrics) -> None:
        for reporter in self.reporters:
            reporter.on_epoch(metrics)

    def on_end(self, result: Result) -> None:
        for reporter in self.reporters:
            reporter.on_end(result)

    def on_warning(self, message: str) -> None:
        for reporter in self.reporters:
            reporter.on_warning(message)
