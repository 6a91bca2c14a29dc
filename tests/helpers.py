"""What many test files share: the tiny run's settings, commands, the processes the tests start,
and comparisons of runs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import Config, Result
from mnist_jax.runtime.compilation import CACHE_ENV, cache_settings, enable_compilation_cache
from mnist_jax.steps import Batch

NUM_TRAIN, NUM_TEST = 300, 100  # the synthetic data's splits (conftest.py makes them)

# The tests' tiny run: 300 examples in batches of 32 are 10 steps an epoch, the last of 12
# examples; 4 batches a chunk are 3 chunks, the last holding 2 real batches and 2 of padding;
# 62 rows an evaluation batch leave a short last one in both splits.
TINY = dict(layer_sizes=(784, 16, 10), batch_size=32, eval_batch_size=62, batches_per_chunk=4)
# any command's
TINY_FLAGS = ["--layer-sizes", "784,16,10", "--batch-size", "32", "--eval-batch-size", "62"]
CHUNK_FLAGS = ["--batches-per-chunk", "4"]  # train's alone (a sweep streams nothing)
MNIST_JAX = [sys.executable, "-m", "mnist_jax.cli"]
ROOT = Path(__file__).resolve().parent.parent


def tiny(data_dir: str, **changes) -> Config:
    """The tiny run on the synthetic data in `data_dir`, two epochs unless `changes` say
    otherwise."""
    return Config(**TINY, num_epochs=2, data_dir=data_dir).replace(**changes)


def suite_cache() -> str | None:
    """The tests' compilation-cache folder (`$MNIST_JAX_COMPILATION_CACHE`, which conftest.py sets
    for this worker and the processes it starts), or None with MNIST_JAX_TEST_CACHE=0. Only for a
    process that compiles while the others sharing the folder wait."""
    return os.environ[CACHE_ENV] if os.environ.get("MNIST_JAX_TEST_CACHE", "1") == "1" else None


def use_the_tests_compilation_cache() -> None:
    """Keeps this process's compiled programs in the tests' cache folder (`suite_cache`)."""
    if folder := suite_cache():
        enable_compilation_cache(folder)


def suite_cache_env() -> dict[str, str]:
    """The same, as environment variables, for a process that starts JAX itself (a notebook's
    kernel)."""
    folder = suite_cache()
    return (
        {name.upper(): str(value) for name, value in cache_settings(folder).items()}
        if folder
        else {}
    )


def worker(name: str) -> list[str]:
    """The command that runs `tests/workers/NAME.py` (its callers bound it with a timeout)."""
    return [sys.executable, "-m", f"tests.workers.{name}"]


# Platforms (by the names JAX_PLATFORMS takes) whose devices several processes may use at once.
# A TPU belongs to the one process that opened it: while pytest holds it, the processes the tests
# start cannot.
SHARED_PLATFORMS = ("cpu", "cuda", "rocm")


def default_platform() -> str:
    """JAX's default platform in this process, by the name JAX_PLATFORMS takes (`cuda` or `rocm`
    where `jax.default_backend()` says `gpu`)."""
    default = jax.extend.backend.get_backend()
    return next(
        name for name, backend in jax.extend.backend.backends().items() if backend is default
    )


def child_platform(default: str | None = None) -> str:
    """The platform of the processes the tests start, and of the runs in this process compared
    with theirs, where JAX's default here is `default` (unset: this process's): the default where
    several processes may share its devices (a CPU, a GPU), the CPU where one process owns them
    (a TPU)."""
    default = default or default_platform()
    return default if default in SHARED_PLATFORMS else "cpu"


def child_env(default: str | None = None, **changes: str) -> dict[str, str]:
    """The environment of a process a test starts: this process's, JAX pinned to
    `child_platform(default)` (and the CPU beside it), a GPU's memory taken as needed rather than
    most of it at start (this process holds its own share), then `changes`."""
    platform = child_platform(default)
    return {
        **os.environ,
        "JAX_PLATFORMS": ",".join(dict.fromkeys([platform, "cpu"])),
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        **changes,
    }


def run_in_a_child(
    command: list[str], timeout: float = 300, **env: str
) -> subprocess.CompletedProcess:
    """Runs `command` in a process of its own (`child_env(**env)`) in the repository's folder
    (where `tests.workers` are found), its output captured as text."""
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=child_env(**env)
    )


def train_as_a_child(config: Config, out_dir: str | None = None, **options) -> Result:
    """`train(config, out_dir, **options)` on the platform of the processes the tests start
    (`child_platform`), for a run compared with theirs: its mesh pinned by the config's platform,
    and what the library computes outside the mesh (the initial state) by JAX's default device."""
    from mnist_jax import train

    platform = child_platform()
    with jax.default_device(jax.devices(platform)[0]):
        return train(config.replace(platform=platform), out_dir, **options)


def params_of(run_dir, file: str = "params.npz") -> dict[str, np.ndarray]:
    """A run folder's params.npz (or another of its .npz files), by name."""
    with np.load(os.path.join(run_dir, file)) as f:
        return {name: f[name] for name in f.files}


def assert_same_params(a: dict, b: dict) -> None:
    """Two params.npz contents, the same names and the same bits."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def metrics_lines(run_dir) -> list[dict]:
    """A run folder's metrics.jsonl."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def scores(run_dir) -> list[tuple]:
    """Each epoch's accuracies and losses in metrics.jsonl (timings differ run to run)."""
    return [
        (m["epoch"], m["train_accuracy"], m["test_accuracy"], m["train_loss"], m["test_loss"])
        for m in metrics_lines(run_dir)
    ]


def folder_state(path: Path) -> dict:
    """Every file under `path`, with its bytes and modification time."""
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def damage(path: Path, change) -> None:
    """Rewrites the file at `path` as `change(its bytes as a bytearray)` returns them."""
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(raw)))


def masked_batch(seed: int = 0, rows: int = 12, real: int = 9) -> Batch:
    """A batch of random images and labels, its last `rows - real` rows padding."""
    rng = np.random.default_rng(seed)
    return Batch(
        jnp.asarray(rng.integers(0, 256, (rows, 28, 28, 1)), jnp.uint8),
        jnp.asarray(rng.integers(0, 10, rows), jnp.int32),
        jnp.arange(rows) < real,
    )


def assert_same_updates(got, want, exact: bool) -> None:
    """Two pytrees of parameters, leaf by leaf: the same bits, or equal to float tolerance."""
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def png_size(path) -> tuple[int, int]:
    """A PNG's width and height, read from its header."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def assert_models_equal_their_runs(result, config, seeds, rtol: float, atol: float) -> None:
    """Each seed's model of a sweep or grid cell (`result`) against its own `train` run of
    `config`: parameters to the tolerances, accuracies exactly, losses to 1e-5."""
    from mnist_jax import train

    for i, seed in enumerate(seeds):
        alone = train(config.replace(seed=seed))
        for swept, single in zip(
            jax.tree.leaves(result.params), jax.tree.leaves(alone.params), strict=True
        ):
            np.testing.assert_allclose(np.asarray(swept)[i], single, rtol=rtol, atol=atol)
        np.testing.assert_allclose(
            result.histories[i, :, :2],
            [(m.train_accuracy, m.test_accuracy) for m in alone.history],
            atol=1e-12,
        )
        np.testing.assert_allclose(
            result.histories[i, :, 2:4],
            [(m.train_loss, m.test_loss) for m in alone.history],
            rtol=1e-5,
        )
