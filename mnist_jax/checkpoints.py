"""Checkpoints: the training state and the history after an epoch, written atomically.

A checkpoint is one `.npz` of the state's flattened leaves (restored against a template
pytree, so dtypes and structure are exact) plus the history as JSON. Nothing else is
needed to resume exactly: initialization and every epoch's order are functions of the
config's seed and the epoch number.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
from dataclasses import dataclass

import jax
import numpy as np

from mnist_jax.results import EpochMetrics, write_atomic

FOLDER = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    """The state's leaves and the history after `epoch` epochs and `batches_done` batches of
    the next (non-zero only when a run was interrupted part-way through an epoch)."""

    epoch: int
    leaves: list[np.ndarray]
    history: list[EpochMetrics]
    batches_done: int = 0

    def restore(self, template):
        """The saved state, shaped like `template` (a pytree with the same structure)."""
        treedef = jax.tree.structure(template)
        if treedef.num_leaves != len(self.leaves):
            raise ValueError(f"checkpoint holds {len(self.leaves)} arrays, the state has {treedef.num_leaves}")
        return jax.tree.unflatten(treedef, self.leaves)


def _path(run_dir: str, epoch: int, batches_done: int = 0) -> str:
    part = f"-batch-{batches_done:06d}" if batches_done else ""
    return os.path.join(run_dir, FOLDER, f"epoch-{epoch:05d}{part}.npz")


def _all(run_dir: str) -> list[str]:
    """Every checkpoint's path, oldest first."""
    def position(path):
        epoch, batches = re.fullmatch(r"epoch-(\d+)(?:-batch-(\d+))?\.npz", os.path.basename(path)).groups()
        return int(epoch), int(batches or 0)

    return sorted(glob.glob(os.path.join(run_dir, FOLDER, "epoch-*.npz")), key=position)


def save(run_dir: str, epoch: int, state, history: list[EpochMetrics], keep: int, batches_done: int = 0) -> str:
    """Writes the checkpoint and deletes all but the newest `keep`."""
    os.makedirs(os.path.join(run_dir, FOLDER), exist_ok=True)
    leaves = {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}
    history_json = json.dumps([dataclasses.asdict(m) for m in history])
    buffer = io.BytesIO()
    np.savez(buffer, epoch=epoch, batches_done=batches_done, history=np.array(history_json), **leaves)
    path = _path(run_dir, epoch, batches_done)
    write_atomic(path, buffer.getvalue())
    for old in _all(run_dir)[:-keep]:
        os.remove(old)
    return path


def latest(run_dir: str) -> Checkpoint | None:
    """The newest checkpoint in the run folder, or None."""
    paths = _all(run_dir)
    if not paths:
        return None
    with np.load(paths[-1]) as f:
        leaves = [f[name] for name in sorted(k for k in f.files if k.startswith("leaf_"))]
        history = [EpochMetrics(**m) for m in json.loads(str(f["history"]))]
        return Checkpoint(int(f["epoch"]), leaves, history, int(f["batches_done"]))
