"""What a run records: metrics over the full splits per epoch, and the finished run's result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from mnist_jax.config import Config
from mnist_jax.models import ModelState, Params

SPLITS = ("train", "validation", "test")


def metric_names(splits: Sequence[str]) -> tuple[str, ...]:
    """The history columns for `splits`: every accuracy, then every mean loss."""
    return tuple(f"{split}_{kind}" for kind in ("accuracy", "loss") for split in splits)


@dataclass(frozen=True)
class EpochMetrics:
    """Metrics over the full splits after `epoch` epochs (0: before training)."""

    epoch: int
    train_accuracy: float
    test_accuracy: float
    train_loss: float  # mean negative log-likelihood per example
    test_loss: float
    epoch_seconds: float | None  # training time of this epoch, None for epoch 0
    examples_per_second: float | None
    eval_seconds: float
    validation_accuracy: float | None = None  # with a validation split held out of train
    validation_loss: float | None = None


def best_epoch(history: Sequence[EpochMetrics]) -> int | None:
    """The epoch of highest validation accuracy (the earliest of equals), or None without a
    validation split."""
    scored = [m for m in history if m.validation_accuracy is not None]
    return max(scored, key=lambda m: m.validation_accuracy).epoch if scored else None


@dataclass
class Result:
    """A finished run: its config, final parameters, history and environment."""

    config: Config
    params: Params
    history: list[EpochMetrics]
    compile_seconds: (
        float  # tracing, lowering and compiling (or loading from the cache) every program
    )
    device: str
    num_devices: int
    versions: dict[str, str]
    compilations: int = 0  # XLA programs the run compiled, or loaded from the persistent cache
    compilations_from_cache: int = 0  # of them loaded from the cache
    data_seconds: float = 0.0  # reading the splits into host memory
    status: str = "completed"  # or "interrupted", "diverged"
    command: list[str] = field(default_factory=list)
    divergence: dict | None = None  # epoch, first_step, last_step, message
    # the signal an interrupted run stopped on: "SIGINT" or "SIGTERM"
    stopped_by: str | None = None
    best_epoch: int | None = None  # of highest validation accuracy, with a validation split
    best_params: Params | None = None  # the parameters after that epoch
    model_state: ModelState = ()  # the model's final state (`()` for a model without one)
    best_model_state: ModelState | None = None  # its state after the best epoch
    # a model you bring: how many of its convolutions took each form (`Steps.convolutions`)
    convolutions: dict[str, int] = field(default_factory=dict)

    @property
    def final_test_accuracy(self) -> float | None:
        """The last epoch's; None for a run stopped before its epoch 0 was scored."""
        return self.history[-1].test_accuracy if self.history else None

    def summary(self) -> dict:
        """The JSON-ready summary written as summary.json."""
        return {
            "status": self.status,
            "config": self.config.to_dict(),
            "history": [dataclasses.asdict(m) for m in self.history],
            "final_train_accuracy": self.history[-1].train_accuracy if self.history else None,
            "final_test_accuracy": self.final_test_accuracy,
            "compile_seconds": self.compile_seconds,
            "compilations": self.compilations,
            "compilations_from_cache": self.compilations_from_cache,
            "data_seconds": self.data_seconds,
            "train_seconds": sum(m.epoch_seconds or 0 for m in self.history),
            "eval_seconds": sum(m.eval_seconds or 0 for m in self.history),
            "device": self.device,
            "num_devices": self.num_devices,
            "versions": self.versions,
            "command": self.command,
            **({"divergence": self.divergence} if self.divergence else {}),
            **({"stopped_by": self.stopped_by} if self.stopped_by else {}),
            **({"best": self._best()} if self.best_epoch is not None else {}),
            **({"convolutions": self.convolutions} if self.convolutions else {}),
        }

    def _best(self) -> dict:
        """The best epoch by validation accuracy and its scores: early stopping without the test
        set."""
        metrics = next(m for m in self.history if m.epoch == self.best_epoch)
        return {
            "epoch": metrics.epoch,
            "validation_accuracy": metrics.validation_accuracy,
            "test_accuracy": metrics.test_accuracy,
            "test_loss": metrics.test_loss,
        }
