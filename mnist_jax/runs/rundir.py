"""The run folder, owned by one object: everything a run writes there, and when.

`RunDir.open` takes the folder's lock and writes (or, to resume, checks) `config.json`; the
loop then hands it the history, the state at each epoch's end and the final result, and the
run folder decides when a checkpoint is due. Every write is atomic, and a failed one becomes a
`StorageError` that names the file, what the folder still holds, and how to go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from mnist_jax.config import OBJECT_PREFIX, Config, extension_blocker
from mnist_jax.errors import ConfigError, RunExistsError, StorageError
from mnist_jax.records import EpochMetrics, Result
from mnist_jax.runs import checkpoints, lock
from mnist_jax.runs.storage import write_atomic, write_json

RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "params.npz",
    "params-best.npz",
    "model-state.npz",
    "model-state-best.npz",
    "curves.png",
)
TENSORBOARD = "tensorboard"  # the folder of event files, with --tensorboard


def leaf_names(params) -> list[str]:
    """Each parameter array's name in params.npz: `W0, b0, W1, ...` for the MLP's list of (W, b)
    pairs, else its key path in the pytree with `/` between keys (`conv0/w`, `layers/2/b`)."""
    if isinstance(params, list) and all(
        isinstance(layer, tuple) and len(layer) == 2 for layer in params
    ):
        return [f"{name}{i}" for i in range(len(params)) for name in "Wb"]
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [
        "/".join(
            str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))
            for key in path
        )
        for path in paths
    ]


def params_to_arrays(params) -> dict[str, np.ndarray]:
    """Flat `{name: host array}`, named by `leaf_names`."""
    return dict(zip(leaf_names(params), map(np.asarray, jax.tree.leaves(params)), strict=True))


def params_from_arrays(arrays, template=None):
    """The inverse of `params_to_arrays` (host arrays, dtype kept), shaped like the pytree
    `template`; without one, the MLP's list of (W, b) pairs."""
    if template is None:
        return [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(arrays) // 2)]
    missing = [name for name in leaf_names(template) if name not in arrays]
    if missing:
        raise ValueError(
            f"params.npz lacks {', '.join(missing[:5])}: it does not hold this model's parameters"
        )
    return jax.tree.unflatten(
        jax.tree.structure(template), [arrays[name] for name in leaf_names(template)]
    )


class RunDir:
    """A run folder: config.json, metrics.jsonl, checkpoints/, params.npz, params-best.npz (with a
    validation split), model-state.npz and model-state-best.npz (for a model with state),
    curves.png, summary.json.

    `RunDir(path)` only reads; `RunDir.open(...)` holds the folder to write it.
    """

    def __init__(self, path: str, config: Config | None = None):
        self.path = path
        self.run_config = config  # the run being written (None when only reading)
        # the epoch of the newest checkpoint written or resumed from
        self.last_saved: int | None = None

    @classmethod
    def open(
        cls,
        path: str,
        config: Config,
        *,
        resume: bool = False,
        overwrite: bool = False,
        on_warning: Callable[[str], None] = lambda message: None,
    ) -> RunDir:
        """Locks the folder for this process, then starts a run of `config` in it (refusing a
        folder that holds one unless `overwrite`) or, with `resume`, checks it holds exactly
        that run. Release it with `close()`, or use it in a `with` block."""
        run_dir = cls(path, config)
        with run_dir._writing("the lock file"):
            recovered = lock.acquire(path)
        if recovered:
            on_warning(recovered)
        try:
            with run_dir._writing("config.json"):
                run_dir._check_config(config) if resume else run_dir._start(config, overwrite)
        except BaseException:
            lock.release(path)
            raise
        # matplotlib takes most of a second to import: load it for curves.png while the run trains.
        threading.Thread(
            target=importlib.import_module, args=("mnist_jax.runs.curves",), daemon=True
        ).start()
        return run_dir

    def close(self) -> None:
        """Releases the folder's lock."""
        lock.release(self.path)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, config: Config, overwrite: bool) -> None:
        existing = [f for f in RUN_FILES if os.path.exists(os.path.join(self.path, f))]
        if existing and not overwrite:
            raise RunExistsError(
                f"{self.path} already holds a run ({', '.join(existing)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        os.makedirs(self.path, exist_ok=True)
        for name in existing:
            os.remove(os.path.join(self.path, name))
        for folder in (checkpoints.FOLDER, TENSORBOARD):
            shutil.rmtree(os.path.join(self.path, folder), ignore_errors=True)
        write_json(os.path.join(self.path, "config.json"), self._config_record(config))

    def check_resume(self, config: Config) -> bool:
        """Whether resuming the folder's run with `config` extends it to more epochs (False: the
        same run). `config` must be the run's own, or extend it where nothing is shaped over its
        length; anything else is a ConfigError naming the settings that differ. Reads only."""
        saved = self.config()
        given, own = config.to_dict(), saved.to_dict()
        changed = [name for name, value in given.items() if own[name] != value]
        if not changed:
            return False
        if changed == ["num_epochs"] and config.num_epochs > saved.num_epochs:
            blocker = extension_blocker(saved)
            if blocker:
                raise ConfigError(
                    f"cannot extend {self.path} from {saved.num_epochs} to {config.num_epochs} "
                    f"epochs: {blocker}; train a new run instead"
                )
            return True
        shorter = (
            " (--epochs can only extend a run)" if config.num_epochs < saved.num_epochs else ""
        )
        raise ConfigError(
            f"resuming {self.path} keeps its own settings; these differ from its config.json: "
            + ", ".join(
                f"{name} (the run's {own[name]!r}, given {given[name]!r})" for name in changed
            )
            + shorter
        )

    def _check_config(self, config: Config) -> None:
        """Resuming: checks `config` (see `check_resume`); an extended run's config.json records
        the new epoch count."""
        if self.check_resume(config):
            write_json(os.path.join(self.path, "config.json"), self._config_record(config))

    @staticmethod
    def _config_record(config: Config) -> dict:
        """config.json: the settings, and which Python objects a resume must be given again."""
        objects = [
            name
            for name in ("model", "optimizer")
            if getattr(config, name).startswith(OBJECT_PREFIX)
        ]
        return config.to_dict() | ({"resume_needs_objects": objects} if objects else {})

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turns a failed write into a StorageError that says what is kept and how to go on."""
        try:
            yield
        except OSError as e:
            kept = (
                f"its checkpoint of epoch {self.last_saved}"
                if self.last_saved is not None
                else "what was written before"
            )
            raise StorageError(
                f"cannot write {what} in {self.path}: {e.strerror or e}; the folder keeps {kept} "
                f"intact; free space or fix the folder, then continue with "
                f"`mnist-jax train --resume {self.path}`"
            ) from e

    def write_metrics(self, history: list[EpochMetrics]) -> None:
        """Replaces metrics.jsonl with `history`, atomically: a failed write leaves the old
        file."""
        lines = "".join(json.dumps(dataclasses.asdict(m)) + "\n" for m in history)
        with self._writing("metrics.jsonl"):
            write_atomic(os.path.join(self.path, "metrics.jsonl"), lines.encode())

    def restart_from(self, checkpoint: checkpoints.Checkpoint) -> None:
        """Resuming from `checkpoint`: metrics.jsonl goes back to its history."""
        self.last_saved = checkpoint.epoch
        self.write_metrics(checkpoint.history)

    def end_epoch(
        self,
        epoch: int,
        state,
        history: list[EpochMetrics],
        *,
        batches_done: int | None = None,
        stopping: bool = False,
    ) -> None:
        """Saves a checkpoint if one is due: every `checkpoint_every` epochs, after the last, and
        whenever the run stops (`stopping`, or part-way through the epoch after `batches_done`)."""
        config = self.run_config
        if not (
            batches_done
            or stopping
            or epoch == config.num_epochs
            or epoch % config.checkpoint_every == 0
        ):
            return
        done = epoch - 1 if batches_done else epoch
        with self._writing(f"the checkpoint of epoch {epoch}"):
            checkpoints.save(
                self.path, done, state, history, config.keep_checkpoints, batches_done or 0
            )
        self.last_saved = done

    def write_result(self, result: Result) -> None:
        """Writes params.npz (unless diverged), params-best.npz (the best epoch's, with a
        validation split), the model's state beside each (model-state.npz, model-state-best.npz)
        if it has one, curves.png and, last, summary.json."""
        # matplotlib only for a saved run (see `open`)
        from mnist_jax.runs.curves import plot_curves

        final = result.status != "diverged"
        saved = {
            "params.npz": result.params if final else None,
            "params-best.npz": result.best_params,
            "model-state.npz": result.model_state if final else None,
            "model-state-best.npz": result.best_model_state,
        }
        with self._writing("the summary"):
            for name, params in saved.items():
                if params is not None and jax.tree.leaves(params):
                    buffer = io.BytesIO()
                    np.savez(buffer, **params_to_arrays(params))
                    write_atomic(os.path.join(self.path, name), buffer.getvalue())
            if result.history:
                plot_curves(result.history, os.path.join(self.path, "curves.png"))
            write_json(os.path.join(self.path, "summary.json"), result.summary())

    def config(self) -> Config:
        """The run's config, as config.json records it."""
        try:
            with open(os.path.join(self.path, "config.json")) as f:
                values = json.load(f)
        except FileNotFoundError:
            raise RunExistsError(f"{self.path} holds no run (no config.json)") from None
        values.pop("resume_needs_objects", None)  # the objects' descriptions are in the settings
        return Config.from_dict(values)

    def load(self, template=None, best: bool = False) -> tuple[Config, Any]:
        """The run's config and saved parameters (with `best`, the best epoch's), shaped like
        `template` (default: the MLP's list)."""
        with np.load(
            os.path.join(self.path, "params-best.npz" if best else "params.npz")
        ) as arrays:
            return self.config(), params_from_arrays(dict(arrays), template)

    def load_model_state(self, template, best: bool = False) -> Any:
        """The model's saved state (with `best`, the best epoch's), shaped like `template`; the
        empty state for a model without one."""
        if not jax.tree.leaves(template):
            return template
        with np.load(
            os.path.join(self.path, "model-state-best.npz" if best else "model-state.npz")
        ) as arrays:
            return params_from_arrays(dict(arrays), template)
