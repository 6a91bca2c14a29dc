"""What a run records: metrics over the full splits per epoch, and the finished run's result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from mnist_jax.config import Config
from mnist_jax.model import Params

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


@dataclass
class Result:
    """A finished run: its config, final parameters, history and environment."""

    config: Config
    params: Params
    history: list[EpochMetrics]
    compile_seconds: float
    device: str
    num_devices: int
    versions: dict[str, str]
    status: str = "completed"  # or "interrupted", "diverged"
    command: list[str] = field(default_factory=list)
    divergence: dict | None = None  # epoch, first_step, last_step, message

    @property
    def final_test_accuracy(self) -> float:
        return self.history[-1].test_accuracy

    def summary(self) -> dict:
        """The JSON-ready summary written as summary.json."""
        return {
            "status": self.status,
            "config": self.config.to_dict(),
            "history": [dataclasses.asdict(m) for m in self.history],
            "final_train_accuracy": self.history[-1].train_accuracy,
            "final_test_accuracy": self.final_test_accuracy,
            "compile_seconds": self.compile_seconds,
            "train_seconds": sum(m.epoch_seconds or 0 for m in self.history),
            "device": self.device,
            "num_devices": self.num_devices,
            "versions": self.versions,
            "command": self.command,
            **({"divergence": self.divergence} if self.divergence else {}),
        }
