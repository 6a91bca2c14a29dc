"""The tfds `mnist` dataset itself: building it offline from IDX files and reading it through tfds.

With `streams`, one of the two modules that load TensorFlow; `dataset` calls it only when the
checked array file (`array_file`) cannot serve, at preparation, and `shares` for the shares of
several processes.
"""

from __future__ import annotations

import os

# TF only reads records and gathers uint8 batches here: its info logs and oneDNN kernels are noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification.mnist import MNIST

from mnist_jax.data.idx import read_split

# TF only feeds data: keep it off every accelerator so JAX owns their memory.
tf.config.set_visible_devices([], "GPU")


class _LocalMNIST(MNIST, skip_registration=True):
    """tfds's own MNIST builder, fed from verified local IDX files instead of a download."""

    name = "mnist"

    def __init__(self, *, idx_dir: str, verify_checksums: bool, **kwargs):
        self._idx_dir = idx_dir
        self._verify_checksums = verify_checksums
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        # Read and verify both splits before tfds writes anything.
        splits = {
            s: read_split(self._idx_dir, s, self._verify_checksums) for s in ("train", "test")
        }
        return [
            tfds.core.SplitGenerator(name=s, gen_kwargs={"split": split})
            for s, split in splits.items()
        ]

    def _generate_examples(self, split):
        for index, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            yield index, {"image": image[..., None], "label": int(label)}


def build(idx_dir: str, data_dir: str, verify_checksums: bool) -> str:
    """Writes the tfds `mnist` dataset into `data_dir` from the IDX files; returns its folder."""
    builder = _LocalMNIST(idx_dir=idx_dir, verify_checksums=verify_checksums, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return builder.data_dir


def read(split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A split (tfds's split syntax) in tfds's stored order: images uint8, labels, and the number
    of examples the dataset's metadata gives for it."""
    builder = tfds.builder("mnist", data_dir=data_dir)
    ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
    images, labels = (np.asarray(a) for a in tfds.as_numpy(ds))
    return images, labels, builder.info.splits[split].num_examples


def even_split_sizes(split: str, parts: int, data_dir: str) -> tuple[list[str], list[int]]:
    """tfds's even division of a split into `parts` subsplits: their names and sizes."""
    subsplits = tfds.even_splits(split, n=parts)
    info = tfds.builder("mnist", data_dir=data_dir).info
    return subsplits, [info.splits[sub].num_examples for sub in subsplits]
