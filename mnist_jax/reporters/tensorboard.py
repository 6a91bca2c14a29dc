"""`TensorBoardReporter`: a run's metrics and step losses as TensorBoard event files, as it
trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mnist_jax.config import Config
from mnist_jax.records import EpochMetrics, Result
from mnist_jax.reporters.base import Reporter
from mnist_jax.runs.events import TrainingEvents


class TensorBoardReporter(Reporter):
    """Writes event files in `folder` (a run's `tensorboard/`): every split's accuracy and loss per
    epoch, the epoch's seconds, and each step's loss and learning rate (`train_size` examples an
    epoch). A resumed run's earlier epochs are in the event files of the run that trained them.
    Close it (or use it in a `with` block) when the run ends."""

    def __init__(self, folder: str, train_size: int):
        self.folder, self.train_size = folder, train_size
        self.events: TrainingEvents | None = None

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None:
        self.events = TrainingEvents(self.folder, [""], [config], self.train_size)

    def on_history(self, history: Sequence[EpochMetrics]) -> None:
        """Nothing: those epochs' events were written when they were trained."""

    def on_steps(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        self.events.steps(epoch, first_step, losses[None])

    def on_epoch(self, metrics: EpochMetrics) -> None:
        scores = {
            name: value
            for name, value in dataclasses.asdict(metrics).items()
            if name.endswith(("_accuracy", "_loss"))
        }
        self.events.metrics(metrics.epoch, [scores], metrics.epoch_seconds)

    def on_end(self, result: Result) -> None:
        self.close()

    def on_warning(self, message: str) -> None:
        """Nothing: warnings are for the reporter beside it (the console, or Python's warnings)."""

    def close(self) -> None:
        if self.events:
            self.events.close()
            self.events = None

    def __enter__(self) -> TensorBoardReporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
