"""What a run produces: per-epoch metrics, the result object, and the run folder."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import os
import platform
import shutil
import sys
import socket
import tempfile
import warnings
from dataclasses import dataclass, field

import jax
import numpy as np

from mnist_jax.config import Config, ConfigError
from mnist_jax.model import Params

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "params.npz", "curves.png")
_PACKAGES = ("mnist-jax", "jax", "jaxlib", "optax", "numpy", "tensorflow-cpu", "tensorflow",
             "tensorflow-datasets")


class RunExistsError(FileExistsError):
    """The output folder already holds a run."""


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


class StorageError(RuntimeError):
    """Writing the run folder failed (a full disk, say); what was saved before is intact."""


@dataclass(frozen=True)
class EpochMetrics:
    """Metrics over the full splits after `epoch` epochs (0: before training)."""

    epoch: int
    train_accuracy: float
    test_accuracy: float
    train_loss: float  # mean negative log-likelihood per example
    test_loss: float
    epoch_seconds: float | None  # training time of this epoch, None for epoch 0
    examples_per_second: float | None
    eval_seconds: float
    validation_accuracy: float | None = None  # with a validation split held out of train
    validation_loss: float | None = None


@dataclass
class Result:
    """A finished run: its config, final parameters, history and environment."""

    config: Config
    params: Params
    history: list[EpochMetrics]
    compile_seconds: float
    device: str
    num_devices: int
    versions: dict[str, str]
    status: str = "completed"  # or "interrupted", "diverged"
    command: list[str] = field(default_factory=list)
    divergence: dict | None = None  # epoch, first_step, last_step, message

    @property
    def final_test_accuracy(self) -> float:
        return self.history[-1].test_accuracy

    def summary(self) -> dict:
        """The JSON-ready summary written as summary.json."""
        return {
            "status": self.status,
            "config": self.config.to_dict(),
            "history": [dataclasses.asdict(m) for m in self.history],
            "final_train_accuracy": self.history[-1].train_accuracy,
            "final_test_accuracy": self.final_test_accuracy,
            "compile_seconds": self.compile_seconds,
            "train_seconds": sum(m.epoch_seconds or 0 for m in self.history),
            "device": self.device,
            "num_devices": self.num_devices,
            "versions": self.versions,
            "command": self.command,
            **({"divergence": self.divergence} if self.divergence else {}),
        }


class Reporter:
    """Hooks the training loop calls; this base class ignores them all."""

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None: ...
    def on_batch(self, epoch: int, batches_done: int) -> None: ...
    def on_epoch(self, metrics: EpochMetrics) -> None: ...
    def on_end(self, result: Result) -> None: ...

    def on_warning(self, message: str) -> None:
        """Something was recovered from (a stale lock, a damaged checkpoint)."""
        warnings.warn(message, stacklevel=2)


def environment(mesh: jax.sharding.Mesh | None = None) -> dict:
    """The device kind and count (the mesh's, else the default device's), versions and command."""
    devices = list(mesh.devices.flat) if mesh is not None else list(jax.numpy.zeros(()).devices())
    device = devices[0]
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"device": f"{device.platform}:{device.device_kind}", "num_devices": len(devices),
            "versions": versions, "command": sys.argv}


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file, so `path` is never half-written."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def params_to_arrays(params: Params) -> dict[str, np.ndarray]:
    """Flat `{"W0": ..., "b0": ..., "W1": ...}` host arrays."""
    return {f"{name}{i}": np.asarray(a) for i, layer in enumerate(params) for name, a in zip("Wb", layer)}


def params_from_arrays(arrays) -> Params:
    """The inverse of `params_to_arrays` (host arrays, dtype kept)."""
    return [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(arrays) // 2)]


@dataclass(frozen=True)
class RunDir:
    """A run folder: config.json, metrics.jsonl, summary.json, params.npz, curves.png."""

    path: str

    @classmethod
    def open_existing(cls, path: str, config: Config) -> RunDir:
        """A run folder to resume: it must hold a run of exactly `config`."""
        saved = cls(path).config()
        if saved != config:
            changed = [k for k, v in config.to_dict().items() if saved.to_dict()[k] != v]
            raise ConfigError(f"resuming {path} needs its own config; these differ: {', '.join(changed)}")
        return cls(path)

    @classmethod
    def create(cls, path: str, config: Config, overwrite: bool = False) -> RunDir:
        """Makes the folder and writes config.json; refuses a folder holding a run unless `overwrite`."""
        existing = [f for f in RUN_FILES if os.path.exists(os.path.join(path, f))]
        if existing and not overwrite:
            raise RunExistsError(f"{path} already holds a run ({', '.join(existing)}); "
                                 "pass --overwrite to replace it or choose another --out")
        os.makedirs(path, exist_ok=True)
        for name in existing:
            os.remove(os.path.join(path, name))
        shutil.rmtree(os.path.join(path, "checkpoints"), ignore_errors=True)
        run_dir = cls(path)
        run_dir._write_json("config.json", config.to_dict())
        return run_dir

    def _write_json(self, name: str, value) -> None:
        write_atomic(os.path.join(self.path, name), (json.dumps(value, indent=2) + "\n").encode())

    def write_metrics(self, history: list[EpochMetrics]) -> None:
        """Replaces metrics.jsonl with `history`, atomically: a failed write leaves the old file."""
        lines = "".join(json.dumps(dataclasses.asdict(m)) + "\n" for m in history)
        write_atomic(os.path.join(self.path, "metrics.jsonl"), lines.encode())

    def write_result(self, result: Result) -> None:
        """Writes params.npz (unless diverged), curves.png and, last, summary.json."""
        from mnist_jax.plots import plot_curves  # matplotlib loads only when a run is saved

        if result.status != "diverged":
            buffer = io.BytesIO()
            np.savez(buffer, **params_to_arrays(result.params))
            write_atomic(os.path.join(self.path, "params.npz"), buffer.getvalue())

        plot_curves(result.history, os.path.join(self.path, "curves.png"))
        self._write_json("summary.json", result.summary())

    def config(self) -> Config:
        """The run's config."""
        try:
            with open(os.path.join(self.path, "config.json")) as f:
                return Config.from_dict(json.load(f))
        except FileNotFoundError:
            raise RunExistsError(f"{self.path} holds no run (no config.json)") from None

    def load(self) -> tuple[Config, Params]:
        """The run's config and saved parameters."""
        with np.load(os.path.join(self.path, "params.npz")) as arrays:
            return self.config(), params_from_arrays(dict(arrays))


LOCK_FILE = "run.lock"


def lock_run_folder(path: str) -> str | None:
    """Takes the folder's lock for this process; returns a note if a stale lock was recovered.

    Raises RunLockedError if a live process (on this host, or any process on another)
    holds it. The lock file, holding the holder's pid and host, appears whole or not at all
    (written aside, then hard-linked into place, which fails if it exists).
    """
    os.makedirs(path, exist_ok=True)
    lock, note = os.path.join(path, LOCK_FILE), None
    mine = f"{lock}.{os.getpid()}"
    with open(mine, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)
                return note
            except FileExistsError:
                holder = _read_lock(lock)
                if _alive(holder):
                    raise RunLockedError(f"{path} is in use by process {holder.get('pid')} on {holder.get('host')} "
                                         f"({lock}); wait for it to finish or stop it") from None
                os.remove(lock)
                note = f"recovered a stale lock on {path} from process {holder.get('pid')}, which is no longer running"
        raise RunLockedError(f"{path}: another process took the lock while a stale one was being recovered")
    finally:
        os.remove(mine)


def unlock_run_folder(path: str) -> None:
    """Releases this process's lock on the folder (if it holds it)."""
    lock = os.path.join(path, LOCK_FILE)
    if _read_lock(lock).get("pid") == os.getpid():
        os.remove(lock)


def _read_lock(lock: str) -> dict:
    try:
        with open(lock) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # unreadable: nobody can prove they hold it


def _alive(holder: dict) -> bool:
    """Whether the lock's holder is a running process (one on another host is assumed to be)."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        with open(f"/proc/{holder['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
