"""The prepared tfds `mnist` dataset on disk: building it from raw IDX files, and its decoded
arrays.

The arrays come from the checked array file beside the dataset (`array_file`), which needs no
TensorFlow; only when that file is missing, stale or damaged, and at preparation, are they
decoded through tfds (`tfds_source`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np

from mnist_jax.data import array_file
from mnist_jax.errors import DataError

IDX_DIR_ENV = "MNIST_JAX_IDX_DIR"
VERSION = "3.0.1"  # of tfds's mnist builder (a test checks it against tfds)


def resolve_data_dir(data_dir: str | None) -> str:
    """tfds's convention: the given folder, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(
        data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    )


def version_dir(data_dir: str | None) -> str:
    """The dataset's own folder, `mnist/<version>`, in the tfds data folder."""
    return os.path.join(resolve_data_dir(data_dir), "mnist", VERSION)


def is_prepared(data_dir: str | None = None) -> bool:
    """Whether the tfds `mnist` dataset is prepared in `data_dir`."""
    return os.path.isfile(os.path.join(version_dir(data_dir), "dataset_info.json"))


def prepare(idx_dir: str, data_dir: str | None = None, verify_checksums: bool = True) -> str:
    """Builds the tfds `mnist` dataset from the raw IDX files, without network, and its array file.

    Verifies each file's format and (unless disabled) the published MD5 of its
    uncompressed bytes. tfds writes into a temporary folder and renames it when
    done, so a failure leaves no half-built dataset. A dataset already there (a
    damaged one, say) is replaced only once the new one is complete. Returns the
    dataset folder.
    """
    from mnist_jax.data import tfds_source

    data_dir = resolve_data_dir(data_dir)
    if not is_prepared(data_dir):
        tfds_source.build(idx_dir, data_dir, verify_checksums)
    else:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".prepare-") as scratch:
            tfds_source.build(idx_dir, scratch, verify_checksums)
            shutil.rmtree(version_dir(data_dir))
            os.replace(version_dir(scratch), version_dir(data_dir))
    decoded(data_dir)
    return version_dir(data_dir)


def decoded(data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The whole train and test splits in tfds's stored order: `{split}_images` (uint8,
    N x 28 x 28 x 1) and `{split}_labels` (int32).

    Read from the array file when it matches the dataset; otherwise decoded through tfds,
    checked against the dataset's metadata, and the array file (re)written.
    """
    folder = version_dir(data_dir)
    if not is_prepared(data_dir):
        raise unreadable(data_dir, "it is not prepared")
    source = array_file.source_digest(folder)
    arrays, _ = array_file.read(folder, source)
    if arrays is not None:
        return arrays
    arrays = {}
    for split in array_file.SPLITS:
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = read_through_tfds(split, data_dir)
    # a read-only dataset folder: every load decodes through tfds
    with contextlib.suppress(OSError):
        array_file.write(folder, arrays, source)
    return arrays


def read_through_tfds(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """A split (tfds's split syntax) read by tfds, checked against the metadata's example count
    and image shape."""
    from mnist_jax.data import tfds_source

    try:
        images, labels, expected = tfds_source.read(split, resolve_data_dir(data_dir))
    except (
        Exception
    ) as e:  # tfds raises many kinds: a failed download, a missing or damaged folder
        raise unreadable(data_dir, e) from e
    if len(labels) != expected or images.shape[1:] != (28, 28, 1):
        raise unreadable(
            data_dir,
            f"split {split!r} holds {len(labels)} examples of shape {images.shape[1:]}, "
            f"its metadata says {expected} of (28, 28, 1)",
        )
    return images, labels.astype(np.int32)


def unreadable(data_dir: str | None, error) -> DataError:
    """The error for a dataset that cannot be read: damaged if prepared, else missing."""
    folder = resolve_data_dir(data_dir)
    reason = (
        str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    )
    if is_prepared(folder):
        return DataError(
            f"the tfds mnist dataset in {folder} is damaged ({reason}); rebuild it with "
            f"`mnist-jax prepare --idx-dir DIR --data-dir {folder}`"
        )
    return DataError(
        f"cannot read the tfds mnist dataset in {folder}: {reason}; prepare it with "
        f"`mnist-jax prepare --idx-dir DIR` or set ${IDX_DIR_ENV}"
    )
