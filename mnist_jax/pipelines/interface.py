"""The `Pipeline` interface both data paths implement, and what a call of it gives back."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax
import numpy as np

from mnist_jax.models import Variables
from mnist_jax.steps import TrainState

OnBatch = Callable[[int], None]
ShouldStop = Callable[[], bool]
Totals = dict[str, tuple[jax.Array, jax.Array]]  # each split's correct predictions, summed loss


def never_stop() -> bool:
    """The default `should_stop`: train the whole epoch, evaluate every split."""
    return False


class EpochRun(NamedTuple):
    """What one `train_epoch` call did: the new state, whether it `completed` the epoch, the
    epoch's batches done so far, and the training loss of every step it ran, from the epoch's
    step `first_step` (0-based)."""

    state: TrainState
    completed: bool
    batches_done: int
    losses: np.ndarray
    first_step: int


class Pipeline(Protocol):
    """A data path. Built by `make_pipeline`, which compiles its programs ahead of time.

    Both methods work in compiled calls of a bounded duration (see `pacing`) and ask
    `should_stop()` between them, so a stop request waits for one call at most.
    """

    def train_epoch(
        self,
        state: TrainState,
        epoch: int,
        on_batch: OnBatch,
        should_stop: ShouldStop = never_stop,
    ) -> EpochRun:
        """Trains on epoch `epoch` (1-based, in order), calling `on_batch(batches_done)` after
        each compiled call; stops part-way once `should_stop()` is true."""

    def evaluate(
        self, variables: Variables, should_stop: ShouldStop = never_stop
    ) -> Totals | None:
        """Every split's correct predictions and summed loss; None if `should_stop()` became
        true before the last split was done."""
