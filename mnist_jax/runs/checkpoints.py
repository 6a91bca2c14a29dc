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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import jax
import numpy as np

from mnist_jax.errors import CheckpointError
from mnist_jax.records import EpochMetrics
from mnist_jax.runs.storage import write_atomic

FOLDER = "checkpoints"
T = TypeVar("T")  # a pytree type: the state a checkpoint restores into


@dataclass(frozen=True)
class Checkpoint:
    """The state's leaves and the history after `epoch` epochs and `batches_done` batches of
    the next (non-zero only when a run was interrupted part-way through an epoch)."""

    epoch: int
    leaves: list[np.ndarray]
    history: list[EpochMetrics]
    batches_done: int = 0

    def restore(self, template: T) -> T:
        """The saved state, shaped like `template` (a pytree with the same structure)."""
        treedef = jax.tree.structure(template)
        if treedef.num_leaves != len(self.leaves):
            raise ValueError(
                f"checkpoint holds {len(self.leaves)} arrays, the state has {treedef.num_leaves}"
            )
        for i, (saved, expected) in enumerate(
            zip(self.leaves, jax.tree.leaves(template), strict=True)
        ):
            if saved.shape != np.shape(expected) or saved.dtype != np.asarray(expected).dtype:
                raise ValueError(
                    f"checkpoint array {i} is {saved.dtype}{list(saved.shape)}, "
                    f"the state's is {np.asarray(expected).dtype}{list(np.shape(expected))}"
                )
        return jax.tree.unflatten(treedef, self.leaves)


def _path(run_dir: str, epoch: int, batches_done: int = 0) -> str:
    part = f"-batch-{batches_done:06d}" if batches_done else ""
    return os.path.join(run_dir, FOLDER, f"epoch-{epoch:05d}{part}.npz")


def _all(run_dir: str) -> list[str]:
    """Every checkpoint's path, oldest first."""

    def position(path: str) -> tuple[int, int]:
        epoch, batches = re.fullmatch(
            r"epoch-(\d+)(?:-batch-(\d+))?\.npz", os.path.basename(path)
        ).groups()
        return int(epoch), int(batches or 0)

    return sorted(glob.glob(os.path.join(run_dir, FOLDER, "epoch-*.npz")), key=position)


def save(
    run_dir: str, epoch: int, state, history: list[EpochMetrics], keep: int, batches_done: int = 0
) -> str:
    """Writes the checkpoint and deletes all but the newest `keep`."""
    os.makedirs(os.path.join(run_dir, FOLDER), exist_ok=True)
    leaves = {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(state))}
    history_json = json.dumps([dataclasses.asdict(m) for m in history])
    buffer = io.BytesIO()
    np.savez(
        buffer, epoch=epoch, batches_done=batches_done, history=np.array(history_json), **leaves
    )
    path = _path(run_dir, epoch, batches_done)
    write_atomic(path, buffer.getvalue())
    for old in _all(run_dir)[:-keep]:
        os.remove(old)
    return path


def load(path: str) -> Checkpoint:
    """Reads one checkpoint file; a damaged one raises CheckpointError naming it."""
    try:
        with np.load(path) as f:
            leaves = [f[name] for name in sorted(k for k in f.files if k.startswith("leaf_"))]
            history = [EpochMetrics(**m) for m in json.loads(str(f["history"]))]
            return Checkpoint(int(f["epoch"]), leaves, history, int(f["batches_done"]))
    except Exception as e:  # a damaged zip or array raises many kinds
        raise CheckpointError(f"{path} is damaged: {type(e).__name__}: {e}") from e


def latest(
    run_dir: str, template=None, on_damaged: Callable[[str], None] = lambda message: None
) -> Checkpoint | None:
    """The newest intact checkpoint in the run folder (restorable into `template` if given),
    or None. Each damaged one passed over is reported to `on_damaged`."""
    for path in reversed(_all(run_dir)):
        try:
            checkpoint = load(path)
            if template is not None:
                checkpoint.restore(template)
            return checkpoint
        except (CheckpointError, ValueError) as e:
            on_damaged(
                str(e) if isinstance(e, CheckpointError) else f"{path} does not fit this run: {e}"
            )
    return None
