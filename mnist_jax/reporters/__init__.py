"""What a run reports as it goes: the `Reporter` hooks the training loop calls, and the reporters
that implement them (the console's table and progress bar, TensorBoard's event files)."""

from mnist_jax.reporters.base import Reporter, Reporters
from mnist_jax.reporters.console import ConsoleReporter
from mnist_jax.reporters.tensorboard import TensorBoardReporter

__all__ = ["ConsoleReporter", "Reporter", "Reporters", "TensorBoardReporter"]
