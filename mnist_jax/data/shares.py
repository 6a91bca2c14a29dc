"""Loading the splits a run trains and scores on: this process's share of each, in host memory."""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np

from mnist_jax.data.dataset import (
    IDX_DIR_ENV,
    decoded,
    is_prepared,
    prepare,
    read_through_tfds,
    resolve_data_dir,
)
from mnist_jax.errors import ConfigError


@dataclass(frozen=True)
class Share:
    """This process's contiguous share of a split, in tfds's stored order: images (N, 28, 28, 1)
    uint8 and labels (N,) int32. `bounds[q]:bounds[q + 1]` are process q's stored positions; one
    process holds it all."""

    images: np.ndarray
    labels: np.ndarray
    bounds: tuple[int, ...]

    @property
    def total(self) -> int:
        """The whole split's size, over every process."""
        return self.bounds[-1]

    def local_file_order(self, split: str) -> np.ndarray:
        """This share's examples (local indices) in the raw files' order (`split`: `train` or
        `test`)."""
        start, end = self.bounds[jax.process_index()], self.bounds[jax.process_index() + 1]
        order = file_order(split, self.total)
        return order[(order >= start) & (order < end)] - start

    def in_file_order(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """This share's images and labels in the raw files' order, as the seed notebook read
        them."""
        order = self.local_file_order(split)
        return self.images[order], self.labels[order]


def load(data_dir: str | None = None, validation_size: int = 0) -> dict[str, Share]:
    """This process's share of the `train` and `test` splits and, with `validation_size`, of
    `validation`: the last `validation_size` examples of tfds's training split (in its stored
    order), which `train` then leaves out.

    The one way the data comes in. A dataset not yet prepared is prepared first from the raw
    files in `$MNIST_JAX_IDX_DIR`, when it is set. In one process the splits come from the
    checked array file; each of several processes reads only its share through tfds.
    """
    idx_dir = os.environ.get(IDX_DIR_ENV)
    if idx_dir and not is_prepared(data_dir):
        prepare(idx_dir, data_dir)
    arrays = decoded(data_dir)
    names = split_ranges(validation_size, len(arrays["train_labels"]))
    if jax.process_count() > 1:
        return {name: _process_share(split, data_dir) for name, split in names.items()}
    shares = {}
    for name, split in names.items():
        base, start, end = split
        images, labels = arrays[f"{base}_images"][start:end], arrays[f"{base}_labels"][start:end]
        shares[name] = Share(images, labels, (0, len(labels)))
    return shares


def split_ranges(
    validation_size: int, total: int
) -> dict[str, tuple[str, int | None, int | None]]:
    """Each split as (tfds split, first example, end) of a training split of `total` examples."""
    if validation_size >= total:
        raise ConfigError(
            f"validation_size {validation_size} leaves no training examples of {total}"
        )
    if not validation_size:
        return {"train": ("train", None, None), "test": ("test", None, None)}
    cut = total - validation_size
    return {
        "train": ("train", None, cut),
        "test": ("test", None, None),
        "validation": ("train", cut, None),
    }


def _tfds_name(split: tuple[str, int | None, int | None]) -> str:
    base, start, end = split
    return base if start is None and end is None else f"{base}[{start or ''}:{end or ''}]"


def _process_share(split: tuple[str, int | None, int | None], data_dir: str | None) -> Share:
    """This process's share of a split, through tfds's even division of it among the processes."""
    from mnist_jax.data import tfds_source

    subsplits, sizes = tfds_source.even_split_sizes(
        _tfds_name(split), jax.process_count(), resolve_data_dir(data_dir)
    )
    images, labels = read_through_tfds(subsplits[jax.process_index()], data_dir)
    return Share(images, labels, tuple(int(b) for b in np.cumsum([0] + sizes)))


def file_order(split: str, num_examples: int) -> np.ndarray:
    """Positions, in tfds's stored order, of the examples in the raw files' order.

    tfds stores examples sorted by a salted hash of their key, which our builder
    (like tfds's own) sets to the example's index in the raw files.
    """
    from tensorflow_datasets.core import hashing  # tfds's hash alone: no TensorFlow

    hasher = hashing.Hasher(salt=split)
    stored_keys = np.argsort([hasher.hash_key(i) for i in range(num_examples)], kind="stable")
    return np.argsort(stored_keys)
