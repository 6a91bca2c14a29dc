"""MNIST's way into a run, and the package's TensorFlow boundary.

One way in, `prepare`: the tfds `mnist` dataset built from the four raw IDX files (and a
checked array file of its decoded splits). One way out, `load`: this process's `Share` of
each split, in host memory. Between them, epoch orders and the batch layout both data paths
share. Only `tfds_source` (preparing, and reading without a valid array file) and `streams`
(the `stream` path's tf.data) load TensorFlow, and only when they are used.
"""

from mnist_jax.data.batches import epoch_order, pad_to_batches
from mnist_jax.data.dataset import IDX_DIR_ENV, is_prepared, prepare, resolve_data_dir
from mnist_jax.data.shares import Share, file_order, load

__all__ = [
    "IDX_DIR_ENV",
    "Share",
    "epoch_order",
    "file_order",
    "is_prepared",
    "load",
    "pad_to_batches",
    "prepare",
    "resolve_data_dir",
]
