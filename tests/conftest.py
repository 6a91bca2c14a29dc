"""Shared fixtures: small synthetic IDX files, their prepared tfds dataset, and the tiny run's
config."""

import fcntl
import importlib.util
import os
import shutil
import tempfile
from importlib.metadata import entry_points

import jax
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.data.idx import SPLIT_FILES, write_idx
from mnist_jax.runtime.compilation import CACHE_ENV
from mnist_jax.runtime.determinism import make_deterministic
from tests.helpers import NUM_TEST, NUM_TRAIN, tiny, use_the_tests_compilation_cache

OPT_LEVEL_FLAG = "--xla_backend_optimization_level"


def cpu_only() -> bool:
    """Whether JAX can only use the CPU here: told so, or no accelerator plugin or libtpu
    installed."""
    return os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu" or not (
        entry_points(group="jax_plugins")
        or importlib.util.find_spec("libtpu")
        or importlib.util.find_spec("jax_plugins")
    )


# The command keeps compiled programs in the user's cache folder: the tests' commands share one of
# their own (set here, so the commands they start in subprocesses inherit it), one per xdist worker
# (JAX writes a cache entry in place, so two processes must not share a folder while both compile).
if "PYTEST_XDIST_WORKER" in os.environ or CACHE_ENV not in os.environ:
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="mnist-jax-tests-compilation-")
use_the_tests_compilation_cache()
# The real files' folder as the README sets it may be relative to the repository; the notebooks'
# kernels and some commands the tests start run elsewhere.
if os.environ.get(data.IDX_DIR_ENV):
    os.environ[data.IDX_DIR_ENV] = os.path.abspath(os.environ[data.IDX_DIR_ENV])
# The suite holds on any platform: runs compared bit for bit are bit-reproducible on a GPU too
# (XLA's deterministic ops, set before JAX starts its backends, and inherited by subprocesses), and
# the tests' own reference computations take true float32 products, as the runs they check do.
make_deterministic()
jax.config.update("jax_default_matmul_precision", "highest")
# On a CPU most of the suite's time is XLA compiling its many small programs, and most of that is
# LLVM optimising the generated code: the tests, and the processes they start, compile at XLA's
# cheapest backend level (0): the same programs, whose results can differ from the default
# level's in the last bits. A level already in XLA_FLAGS is kept, so
# `XLA_FLAGS=--xla_backend_optimization_level=2 python -m pytest` tests what users run.
if cpu_only() and OPT_LEVEL_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {OPT_LEVEL_FLAG}=0".strip()


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's default): two worker processes where JAX can only use the CPU, none
    (the suite in this one process) where an accelerator plugin is installed, since a TPU belongs
    to one process and each process would preallocate most of a GPU's memory."""
    return min(2, os.cpu_count() or 1) if cpu_only() else 0


def synthetic_split(num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights up rows 2k..2k+3, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num_examples).astype(np.uint8)
    images = rng.integers(0, 60, (num_examples, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 2 : 2 * k + 6, 4:24] = 255
    return images, labels


def write_split_files(idx_dir, split: str, images, labels, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    images_name, labels_name = SPLIT_FILES[split]
    write_idx(os.path.join(idx_dir, images_name + suffix), images)
    write_idx(os.path.join(idx_dir, labels_name + suffix), labels)


@pytest.fixture(scope="session")
def synthetic():
    return {"train": synthetic_split(NUM_TRAIN, 0), "test": synthetic_split(NUM_TEST, 1)}


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory, synthetic):
    """Four small IDX files: train gzipped, test uncompressed."""
    path = tmp_path_factory.mktemp("idx")
    for split, gz in (("train", True), ("test", False)):
        write_split_files(path, split, *synthetic[split], gz=gz)
    return str(path)


def prepared_once(
    tmp_path_factory, worker_id: str, name: str, idx_dir: str, verify_checksums: bool
) -> str:
    """A tfds folder prepared from `idx_dir` once per test session and shared by its xdist workers
    (in their common temporary folder; the first to take the lock prepares it). Tests must not
    change it: those that damage a dataset copy it first."""
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    path = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(path, ignore_errors=True)  # a worker that failed half-way
            data.prepare(idx_dir, str(path), verify_checksums=verify_checksums)
            (root / f"{name}.done").touch()
    return str(path)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, worker_id, idx_dir):
    """A tfds data folder holding `mnist` prepared from the synthetic files."""
    return prepared_once(
        tmp_path_factory, worker_id, "tfds-synthetic", idx_dir, verify_checksums=False
    )


@pytest.fixture
def bad_dir(tmp_path, synthetic):
    """A copy of the synthetic files, uncompressed, for a test to damage."""
    for split in ("train", "test"):
        write_split_files(tmp_path, split, *synthetic[split], gz=False)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_config(data_dir):
    """The tiny run (`helpers.TINY`) on the synthetic data, two epochs; `.replace` what a test
    varies."""
    return tiny(data_dir)


@pytest.fixture(scope="session")
def real_idx_dir():
    """The real MNIST files' folder, $MNIST_JAX_IDX_DIR."""
    if not os.environ.get(data.IDX_DIR_ENV):
        pytest.skip(f"${data.IDX_DIR_ENV} is not set: no real MNIST files")
    return os.environ[data.IDX_DIR_ENV]


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory, worker_id, real_idx_dir):
    """A tfds folder prepared from the real files, their published MD5s checked."""
    return prepared_once(
        tmp_path_factory, worker_id, "tfds-real", real_idx_dir, verify_checksums=True
    )
