"""Reading and verifying the four raw MNIST files in IDX format."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from mnist_jax.errors import DataError

# The published MD5s of the uncompressed canonical files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


@dataclass(frozen=True)
class Split:
    """One split's images (N, 28, 28) uint8 and labels (N,) uint8."""

    images: np.ndarray
    labels: np.ndarray


def find_file(idx_dir: str, name: str) -> str:
    """Returns the path of `name` or `name.gz` in `idx_dir`."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(idx_dir, candidate)
        if os.path.isfile(path):
            return path
    raise DataError(f"{os.path.join(idx_dir, name)}[.gz]: file not found")


def read_bytes(path: str) -> bytes:
    """Returns the uncompressed bytes of an IDX file, gzipped or not."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {e}") from e


def parse_idx(data: bytes, path: str, ndim: int) -> np.ndarray:
    """Parses IDX bytes holding unsigned bytes with `ndim` dimensions."""
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated header ({len(data)} bytes)")
    zero, dtype, dims = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype != _UBYTE or dims != ndim:
        magic = int.from_bytes(data[:4], "big")
        expected = (_UBYTE << 8) | ndim
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected:08x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected_len = offset + math.prod(shape)  # Python ints: a fuzzed header cannot overflow
    if len(data) != expected_len:
        kind = "truncated" if len(data) < expected_len else "has trailing bytes"
        raise DataError(
            f"{path}: {kind}: header says {shape} ({expected_len} bytes), "
            f"file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def read_split(idx_dir: str, split: str, verify_checksums: bool = True) -> Split:
    """Reads and verifies one split ("train" or "test") from `idx_dir`."""
    images_name, labels_name = SPLIT_FILES[split]
    arrays = []
    for name, ndim in ((images_name, 3), (labels_name, 1)):
        path = find_file(idx_dir, name)
        data = read_bytes(path)
        if verify_checksums and (md5 := hashlib.md5(data).hexdigest()) != MNIST_MD5[name]:
            raise DataError(
                f"{path}: checksum mismatch: MD5 of the uncompressed bytes is {md5}, "
                f"the published MNIST file's is {MNIST_MD5[name]}"
            )
        arrays.append((path, parse_idx(data, path, ndim)))
    (images_path, images), (labels_path, labels) = arrays
    if images.shape[1:] != _IMAGE_SHAPE:
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected {_IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but "
            f"{labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is out of range 0-9")
    return Split(images, labels)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (gzipped if `path` ends in .gz)."""
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if path.endswith(".gz") else data)
