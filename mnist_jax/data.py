"""The MNIST splits as host arrays: preparing the tfds dataset, loading shares of it, epoch orders.

Loading reads the checked array file beside the prepared dataset (`array_cache`), which
needs no TensorFlow; only when that file is missing, stale or damaged, at preparation, and
for the shares of several processes does it read through tfds (`tfds_source`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

import jax
import numpy as np

from mnist_jax import array_cache
from mnist_jax.idx import DataError

IDX_DIR_ENV = "MNIST_JAX_IDX_DIR"
VERSION = "3.0.1"  # of tfds's mnist builder (a test checks it against tfds)


def resolve_data_dir(data_dir: str | None) -> str:
    """tfds's convention: the given folder, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def is_prepared(data_dir: str | None = None) -> bool:
    """Whether the tfds `mnist` dataset is prepared in `data_dir`."""
    return os.path.isfile(os.path.join(_version_dir(resolve_data_dir(data_dir)), "dataset_info.json"))


def _version_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "mnist", VERSION)


def prepare(idx_dir: str, data_dir: str | None = None, verify_checksums: bool = True) -> str:
    """Builds the tfds `mnist` dataset from the raw IDX files, without network, and its array file.

    Verifies each file's format and (unless disabled) the published MD5 of its
    uncompressed bytes. tfds writes into a temporary folder and renames it when
    done, so a failure leaves no half-built dataset. A dataset already there (a
    damaged one, say) is replaced only once the new one is complete. Returns the
    dataset folder.
    """
    from mnist_jax import tfds_source

    data_dir = resolve_data_dir(data_dir)
    if not is_prepared(data_dir):
        tfds_source.build(idx_dir, data_dir, verify_checksums)
    else:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".prepare-") as scratch:
            tfds_source.build(idx_dir, scratch, verify_checksums)
            shutil.rmtree(_version_dir(data_dir))
            os.replace(_version_dir(scratch), _version_dir(data_dir))
    decoded_splits(data_dir)
    return _version_dir(data_dir)


def ensure_prepared(data_dir: str | None = None) -> None:
    """Prepares the dataset from $MNIST_JAX_IDX_DIR if it is set and not prepared yet."""
    idx_dir = os.environ.get(IDX_DIR_ENV)
    if idx_dir and not is_prepared(data_dir):
        prepare(idx_dir, data_dir)


def decoded_splits(data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The whole train and test splits in tfds's stored order: `{split}_images` (uint8,
    N x 28 x 28 x 1) and `{split}_labels` (int32).

    Read from the array file when it matches the dataset; otherwise decoded through tfds,
    checked against the dataset's metadata, and the array file (re)written.
    """
    ensure_prepared(data_dir)
    folder = resolve_data_dir(data_dir)
    version_dir = _version_dir(folder)
    if not is_prepared(folder):
        raise _unreadable(folder, "it is not prepared")
    source = array_cache.source_digest(version_dir)
    arrays, _ = array_cache.read(version_dir, source)
    if arrays is not None:
        return arrays
    arrays = {}
    for split in array_cache.SPLITS:
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _read_through_tfds(split, folder)
    with contextlib.suppress(OSError):  # a read-only dataset folder: every load decodes through tfds
        array_cache.write(version_dir, arrays, source)
    return arrays


def _read_through_tfds(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """A split read by tfds, checked against the metadata's example count and image shape."""
    from mnist_jax import tfds_source

    try:
        images, labels, expected = tfds_source.read(split, folder)
    except Exception as e:  # tfds raises many kinds: a failed download, a missing or damaged folder
        raise _unreadable(folder, e) from e
    if len(labels) != expected or images.shape[1:] != (28, 28, 1):
        raise _unreadable(folder, f"split {split!r} holds {len(labels)} examples of shape {images.shape[1:]}, "
                                  f"its metadata says {expected} of (28, 28, 1)")
    return images, labels.astype(np.int32)


def file_order(split: str, num_examples: int) -> np.ndarray:
    """Positions, in tfds's stored order, of the examples in the raw files' order.

    tfds stores examples sorted by a salted hash of their key, which our builder
    (like tfds's own) sets to the example's index in the raw files.
    """
    from tensorflow_datasets.core import hashing  # tfds's hash alone: no TensorFlow

    hasher = hashing.Hasher(salt=split)
    stored_keys = np.argsort([hasher.hash_key(i) for i in range(num_examples)], kind="stable")
    return np.argsort(stored_keys)


_SLICE = re.compile(r"^(train|test)(?:\[(\d*):(\d*)\])?$")


def load_split(split: str, data_dir: str | None = None,
               in_file_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A split in host arrays (images uint8, labels int32), by tfds's split name: `train`, `test`,
    a slice of examples such as `train[:50000]` (served by the array file), or any other tfds
    split (a percent slice, a `tfds.even_splits` part: read through tfds)."""
    if isinstance(split, str) and _SLICE.match(split):
        images, labels = _sliced(decoded_splits(data_dir), split)
    else:
        ensure_prepared(data_dir)
        images, labels = _read_through_tfds(split, resolve_data_dir(data_dir))
    if in_file_order:
        order = file_order(split, len(labels))
        images, labels = images[order], labels[order]
    return images, labels


def _sliced(arrays: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of `split` (`train`, `test` or a slice such as `train[:50000]`)."""
    name, start, end = _SLICE.match(split).groups()
    part = slice(int(start) if start else None, int(end) if end else None)
    return arrays[f"{name}_images"][part], arrays[f"{name}_labels"][part]


def _unreadable(folder: str, error) -> DataError:
    """The error for a dataset that cannot be read: damaged if prepared, else missing."""
    reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    if is_prepared(folder):
        return DataError(f"the tfds mnist dataset in {folder} is damaged ({reason}); rebuild it with "
                         f"`mnist-jax prepare --idx-dir DIR --data-dir {folder}`")
    return DataError(f"cannot read the tfds mnist dataset in {folder}: {reason}; prepare it with "
                     f"`mnist-jax prepare --idx-dir DIR` or set ${IDX_DIR_ENV}")


def epoch_order(seed: int, epoch: jax.Array | int, num_examples: int, process: int | None = None) -> jax.Array:
    """The training order of epoch `epoch`: a permutation drawn from (seed, epoch).

    Both pipelines use it, so they see the same batches. `process` gives each process
    of a multi-process stream its own order of its own share.
    """
    key = jax.random.fold_in(jax.random.key(seed), epoch)
    return jax.random.permutation(key if process is None else jax.random.fold_in(key, process), num_examples)


@dataclass(frozen=True)
class Share:
    """This process's contiguous share of a split, in tfds's stored order.

    `bounds[q]:bounds[q + 1]` are process q's stored positions; one process holds it all.
    """

    images: np.ndarray
    labels: np.ndarray
    bounds: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.bounds[-1]

    def local_file_order(self, split: str) -> np.ndarray:
        """This share's examples (local indices) in the raw files' order."""
        start, end = self.bounds[jax.process_index()], self.bounds[jax.process_index() + 1]
        order = file_order(split, self.total)
        return order[(order >= start) & (order < end)] - start


def split_names(validation_size: int, data_dir: str | None = None) -> dict[str, str]:
    """tfds split names for training, test and (with `validation_size`) validation."""
    if not validation_size:
        return {"train": "train", "test": "test"}
    return _split_names(validation_size, len(decoded_splits(data_dir)["train_labels"]))


def _split_names(validation_size: int, total: int) -> dict[str, str]:
    if validation_size >= total:
        raise DataError(f"validation_size {validation_size} leaves no training examples of {total}")
    if not validation_size:
        return {"train": "train", "test": "test"}
    cut = total - validation_size
    return {"train": f"train[:{cut}]", "test": "test", "validation": f"train[{cut}:]"}


def load_share(split: str, data_dir: str | None = None) -> Share:
    """Reads only this process's share of a split (all of it in one process)."""
    num_processes = jax.process_count()
    if num_processes == 1:
        images, labels = load_split(split, data_dir)
        return Share(images, labels, (0, len(labels)))
    from mnist_jax import tfds_source

    ensure_prepared(data_dir)
    subsplits, sizes = tfds_source.even_split_sizes(split, num_processes, resolve_data_dir(data_dir))
    images, labels = load_split(subsplits[jax.process_index()], data_dir)
    return Share(images, labels, tuple(int(b) for b in np.cumsum([0] + sizes)))


def load_shares(validation_size: int = 0, data_dir: str | None = None) -> dict[str, Share]:
    """This process's share of the training, test and (with `validation_size`) validation splits."""
    if jax.process_count() > 1:
        return {name: load_share(split, data_dir) for name, split in split_names(validation_size, data_dir).items()}
    arrays = decoded_splits(data_dir)  # read once for every split
    shares = {}
    for name, split in _split_names(validation_size, len(arrays["train_labels"])).items():
        images, labels = _sliced(arrays, split)
        shares[name] = Share(images, labels, (0, len(labels)))
    return shares


def pad_to_batches(orders, batch_size: int, rows_per_batch: int, batches_per_chunk: int = 1, xp=np,
                   num_batches: int | None = None):
    """Example indices laid out as whole batches: (passes, chunks, batches_per_chunk, rows_per_batch).

    `orders` holds one row of indices per pass over a split. Each batch takes the next
    `batch_size` of them and is widened to `rows_per_batch` rows (a multiple of the
    device count); each pass ends with padding to `num_batches` batches (default: as many
    as the pass needs) and to a whole number of chunks. Padding is -1,
    so `indices >= 0` is the mask. `xp` is numpy, or jax.numpy inside a jitted function.
    """
    num_passes, num_examples = orders.shape
    num_batches = num_batches or -(-num_examples // batch_size)
    num_chunks = -(-num_batches // batches_per_chunk)
    batches = xp.pad(orders, ((0, 0), (0, num_batches * batch_size - num_examples)), constant_values=-1)
    batches = xp.pad(batches.reshape(num_passes, num_batches, batch_size),
                     ((0, 0), (0, num_chunks * batches_per_chunk - num_batches), (0, rows_per_batch - batch_size)),
                     constant_values=-1)
    return batches.reshape(num_passes, num_chunks, batches_per_chunk, rows_per_batch)
