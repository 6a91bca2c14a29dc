"""mnist_jax: the autograd MNIST notebook's MLP as a fast, faithful JAX package.

The public API: `Config` and `preset` (every setting), `train` (a run, its folder written if
asked), the `Model` interface (its `Params`, `ModelState` and `Variables`; the adapters of Flax
and Equinox modules are in `mnist_jax.models`), `make_steps` (the pure train and eval steps a run
uses), the seed notebook's MLP as plain functions (`init_params`, `predict`, `loss`, `accuracy`),
what a run returns (`Result`, `EpochMetrics`), and the errors the package raises on purpose.
"""

from mnist_jax.config import Config, preset
from mnist_jax.errors import ConfigError, DataError, MnistJaxError, UsageError
from mnist_jax.models import Model, ModelState, Params, Variables
from mnist_jax.models.mlp import accuracy, init_params, loss, predict
from mnist_jax.records import EpochMetrics, Result
from mnist_jax.steps import Batch, Steps, TrainState, make_steps

__all__ = [
    "Batch",
    "Config",
    "ConfigError",
    "DataError",
    "EpochMetrics",
    "MnistJaxError",
    "Model",
    "ModelState",
    "Params",
    "Result",
    "Steps",
    "TrainState",
    "UsageError",
    "Variables",
    "accuracy",
    "init_params",
    "loss",
    "make_steps",
    "predict",
    "preset",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The training loop imports more than the rest: load it on first use only.
    if name == "train":
        from mnist_jax.training import train

        return train
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
