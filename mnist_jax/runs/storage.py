"""Atomic file writes: a file is either its old version or its new one, never half-written."""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a synced temporary file renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; a run's files are for reading
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str, value) -> None:
    """`value` as indented JSON, written atomically."""
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())
