"""The tfds `mnist` dataset: offline preparation, loading and minibatch streams."""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# TF only gathers uint8 batches here: its info logs and oneDNN kernels are noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing
from tensorflow_datasets.image_classification.mnist import MNIST

from mnist_jax.idx import DataError, read_split
from mnist_jax.steps import Batch

# TF only feeds data: keep it off every accelerator so JAX owns their memory.
tf.config.set_visible_devices([], "GPU")

IDX_DIR_ENV = "MNIST_JAX_IDX_DIR"


class _LocalMNIST(MNIST, skip_registration=True):
    """tfds's own MNIST builder, fed from verified local IDX files instead of a download."""

    name = "mnist"

    def __init__(self, *, idx_dir: str, verify_checksums: bool, **kwargs):
        self._idx_dir = idx_dir
        self._verify_checksums = verify_checksums
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        # Read and verify both splits before tfds writes anything.
        splits = {s: read_split(self._idx_dir, s, self._verify_checksums) for s in ("train", "test")}
        return [
            tfds.core.SplitGenerator(name=s, gen_kwargs={"split": split})
            for s, split in splits.items()
        ]

    def _generate_examples(self, split):
        for index, (image, label) in enumerate(zip(split.images, split.labels)):
            yield index, {"image": image[..., None], "label": int(label)}


def resolve_data_dir(data_dir: str | None) -> str:
    """tfds's convention: the given folder, else $TFDS_DATA_DIR, else tfds's default."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR)


def is_prepared(data_dir: str | None = None) -> bool:
    """Whether the tfds `mnist` dataset is prepared in `data_dir`."""
    return os.path.isfile(os.path.join(_version_dir(resolve_data_dir(data_dir)), "dataset_info.json"))


def _version_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "mnist", str(MNIST.VERSION))


def prepare(idx_dir: str, data_dir: str | None = None, verify_checksums: bool = True) -> str:
    """Builds the tfds `mnist` dataset from the raw IDX files, without network.

    Verifies each file's format and (unless disabled) the published MD5 of its
    uncompressed bytes. tfds writes into a temporary folder and renames it when
    done, so a failure leaves no half-built dataset. A dataset already there (a
    damaged one, say) is replaced only once the new one is complete. Returns the
    dataset folder.
    """
    data_dir = resolve_data_dir(data_dir)
    if not is_prepared(data_dir):
        return _build(idx_dir, data_dir, verify_checksums)
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".prepare-") as scratch:
        _build(idx_dir, scratch, verify_checksums)
        shutil.rmtree(_version_dir(data_dir))
        os.replace(_version_dir(scratch), _version_dir(data_dir))
    return _version_dir(data_dir)


def _build(idx_dir: str, data_dir: str, verify_checksums: bool) -> str:
    builder = _LocalMNIST(idx_dir=idx_dir, verify_checksums=verify_checksums, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder.data_dir


def ensure_prepared(data_dir: str | None = None) -> None:
    """Prepares the dataset from $MNIST_JAX_IDX_DIR if it is set and not prepared yet."""
    idx_dir = os.environ.get(IDX_DIR_ENV)
    if idx_dir and not is_prepared(data_dir):
        prepare(idx_dir, data_dir)


def file_order(split: str, num_examples: int) -> np.ndarray:
    """Positions, in tfds's stored order, of the examples in the raw files' order.

    tfds stores examples sorted by a salted hash of their key, which our builder
    (like tfds's own) sets to the example's index in the raw files.
    """
    hasher = hashing.Hasher(salt=split)
    stored_keys = np.argsort([hasher.hash_key(i) for i in range(num_examples)], kind="stable")
    return np.argsort(stored_keys)


def load_split(split: str, data_dir: str | None = None,
               in_file_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reads a whole split through tfds into host arrays (images uint8, labels int32)."""
    ensure_prepared(data_dir)
    folder = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder("mnist", data_dir=folder)
        ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        images, labels = (np.asarray(a) for a in tfds.as_numpy(ds))
        expected = builder.info.splits[split].num_examples
    except Exception as e:  # tfds raises many kinds: a failed download, a missing or damaged folder
        raise _unreadable(folder, e) from e
    if len(labels) != expected or images.shape[1:] != (28, 28, 1):
        raise _unreadable(folder, f"split {split!r} holds {len(labels)} examples of shape {images.shape[1:]}, "
                                  f"its metadata says {expected} of (28, 28, 1)")
    labels = labels.astype(np.int32)
    if in_file_order:
        order = file_order(split, len(labels))
        images, labels = images[order], labels[order]
    return images, labels


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
    ensure_prepared(data_dir)
    total = tfds.builder("mnist", data_dir=resolve_data_dir(data_dir)).info.splits["train"].num_examples
    if validation_size >= total:
        raise DataError(f"validation_size {validation_size} leaves no training examples of {total}")
    cut = total - validation_size
    return {"train": f"train[:{cut}]", "test": "test", "validation": f"train[{cut}:]"}


def load_share(split: str, data_dir: str | None = None) -> Share:
    """Reads only this process's share of a split through tfds (all of it in one process)."""
    num_processes = jax.process_count()
    if num_processes == 1:
        images, labels = load_split(split, data_dir)
        return Share(images, labels, (0, len(labels)))
    subsplits = tfds.even_splits(split, n=num_processes)
    info = tfds.builder("mnist", data_dir=resolve_data_dir(data_dir)).info
    sizes = [info.splits[sub].num_examples for sub in subsplits]
    images, labels = load_split(subsplits[jax.process_index()], data_dir)
    return Share(images, labels, tuple(int(b) for b in np.cumsum([0] + sizes)))


def load_shares(validation_size: int = 0, data_dir: str | None = None) -> dict[str, Share]:
    """This process's share of the training, test and (with `validation_size`) validation splits."""
    names = split_names(validation_size, data_dir)
    return {name: load_share(split, data_dir) for name, split in names.items()}


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


def batch_chunks(images: np.ndarray, labels: np.ndarray, orders: np.ndarray, batch_size: int,
                 batches_per_chunk: int = 1, rows_per_batch: int | None = None,
                 num_batches: int | None = None) -> tf.data.Dataset:
    """A tf.data stream of fixed-shape chunks of `batches_per_chunk` batches, pass after pass.

    See `pad_to_batches` for the layout; padding rows have mask False, so every example
    counts exactly once per pass and every chunk has the same shape. Build it once and
    iterate it as often as needed: tf.data traces its functions only when it is built.
    """
    indices = pad_to_batches(orders.astype(np.int32), batch_size, rows_per_batch or batch_size,
                             batches_per_chunk, num_batches=num_batches)
    images, labels = tf.constant(images), tf.constant(labels)

    def gather(chunk_indices):
        mask = chunk_indices >= 0
        rows = tf.maximum(chunk_indices, 0)
        return Batch(tf.gather(images, rows), tf.gather(labels, rows), mask)

    return (tf.data.Dataset.from_tensor_slices(indices.reshape(-1, *indices.shape[2:]))
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(2))


def prefetch_to_device(dataset: Iterable, sharding: jax.sharding.Sharding | None = None,
                       size: int = 2) -> Iterator[Batch]:
    """Transfers a tf.data stream's batches to the devices `size` ahead of their use."""
    def put(batch):
        # Each process contributes its rows of the global batch (all of them in one process).
        if sharding is None:
            return jax.device_put(batch)
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)

    queue = collections.deque()
    # A named iterator lives as long as this generator: tearing down a tf.data
    # iterator can stall for a while, which must not happen inside an epoch.
    iterator = dataset.as_numpy_iterator() if isinstance(dataset, tf.data.Dataset) else iter(dataset)
    for batch in iterator:
        queue.append(put(Batch(*batch)))
        if len(queue) > size:
            yield queue.popleft()
    yield from queue
