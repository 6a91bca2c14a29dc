"""mnist_jax: the autograd MNIST notebook's MLP as a JAX package."""

from mnist_jax.config import Config, ConfigError, preset
from mnist_jax.idx import DataError
from mnist_jax.model import Params, accuracy, init_params, loss, predict
from mnist_jax.results import EpochMetrics, Result

__all__ = [
    "Config", "ConfigError", "DataError", "EpochMetrics", "Params", "Result", "TrainState",
    "accuracy", "init_params", "loss", "predict", "preset", "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The training loop pulls in TensorFlow for tf.data; load it on first use only.
    if name in ("train", "TrainState"):
        from mnist_jax import training

        return getattr(training, name)
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
