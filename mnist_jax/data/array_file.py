"""The decoded splits kept as one uint8 array file beside the prepared tfds dataset.

tfds stays the source of truth. The file is written from what tfds read and records a
digest of the dataset's files (its metadata and record files) and one of its own arrays. It
is used only while both still match: a re-prepared or changed dataset makes it stale, a
damaged file fails its digest, and either way it is rebuilt from tfds. Reading it costs a
tenth of a second and no TensorFlow; decoding 70,000 PNGs through tfds costs seconds.
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np

from mnist_jax.runs.storage import write_atomic

FILE_NAME = "mnist_jax-arrays.npz"
SPLITS = ("train", "test")
_DIGESTS = ("source_digest", "content_digest")


def path(version_dir: str) -> str:
    """Where the array file of the dataset in `version_dir` lives."""
    return os.path.join(version_dir, FILE_NAME)


def source_digest(version_dir: str) -> str:
    """SHA-256 over the names and bytes of the dataset's own files (not this file, nor hidden
    ones)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(version_dir)):
        if name == FILE_NAME or name.startswith("."):
            continue
        with open(os.path.join(version_dir, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


def write(version_dir: str, arrays: dict[str, np.ndarray], source: str) -> None:
    """Writes `arrays` (decoded from the dataset whose `source_digest` is `source`) atomically."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **arrays,
        source_digest=np.array(source),
        content_digest=np.array(content_digest(arrays)),
    )
    write_atomic(path(version_dir), buffer.getvalue())


def read(version_dir: str, source: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays, if the file exists, was made from the dataset whose digest is `source`, and is
    intact; else None. The second value says which: "ok", "missing", "stale" or "damaged"."""
    try:
        with np.load(path(version_dir), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        return None, "missing"
    except Exception:  # a truncated or garbled zip raises many kinds
        return None, "damaged"
    if any(name not in arrays for name in _DIGESTS):
        return None, "damaged"
    if str(arrays.pop("source_digest")) != source:
        return None, "stale"
    if str(arrays.pop("content_digest")) != content_digest(arrays):
        return None, "damaged"
    return arrays, "ok"
