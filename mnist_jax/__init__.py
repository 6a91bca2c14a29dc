"""mnist_jax: the autograd MNIST notebook's MLP as a JAX package."""

from mnist_jax.config import Config, ConfigError, preset
from mnist_jax.idx import DataError
from mnist_jax.model import Params, accuracy, init_params, loss, predict
from mnist_jax.models import Model
from mnist_jax.results import EpochMetrics, Result
from mnist_jax.steps import Batch, Steps, TrainState, make_steps

__all__ = [
    "Batch", "Config", "ConfigError", "DataError", "EpochMetrics", "Model", "Params", "Result", "Steps", "TrainState",
    "accuracy", "init_params", "loss", "make_steps", "predict", "preset", "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The training loop pulls in TensorFlow for tf.data; load it on first use only.
    if name == "train":
        from mnist_jax.training import train

        return train
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
