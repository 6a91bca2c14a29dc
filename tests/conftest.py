"""Shared fixtures: small synthetic IDX files, their prepared tfds dataset, and the tiny run's config."""

import importlib.util
import os
import tempfile
from importlib.metadata import entry_points

import jax
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.data.idx import SPLIT_FILES, write_idx
from mnist_jax.runtime.compilation import CACHE_ENV, enable_compilation_cache
from mnist_jax.runtime.determinism import make_deterministic
from tests.helpers import NUM_TEST, NUM_TRAIN, tiny

# The command keeps compiled programs in the user's cache folder: the tests' commands share one of
# their own (set here, so the commands they start in subprocesses inherit it), one per xdist worker
# (JAX writes a cache entry in place, so two processes must not share a folder while both compile).
if "PYTEST_XDIST_WORKER" in os.environ or CACHE_ENV not in os.environ:
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="mnist-jax-tests-compilation-")
if os.environ.get("MNIST_JAX_TEST_CACHE", "1") == "1":
    enable_compilation_cache(os.environ[CACHE_ENV])
# The real files' folder as the README sets it may be relative to the repository; the notebooks' kernels
# and some commands the tests start run elsewhere.
if os.environ.get(data.IDX_DIR_ENV):
    os.environ[data.IDX_DIR_ENV] = os.path.abspath(os.environ[data.IDX_DIR_ENV])
# The suite holds on any platform: runs compared bit for bit are bit-reproducible on a GPU too (XLA's
# deterministic ops, set before JAX starts its backends, and inherited by subprocesses), and the
# tests' own reference computations take true float32 products, as the runs they check do.
make_deterministic()
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's default): two worker processes where JAX can only use the CPU, none (the
    suite in this one process) where an accelerator plugin is installed, since a TPU belongs to one
    process and each process would preallocate most of a GPU's memory."""
    cpu_only = os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu" or not (
        entry_points(group="jax_plugins") or importlib.util.find_spec("libtpu")
        or importlib.util.find_spec("jax_plugins"))
    return min(2, os.cpu_count() or 1) if cpu_only else 0


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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, idx_dir):
    """A tfds data folder holding `mnist` prepared from the synthetic files."""
    path = str(tmp_path_factory.mktemp("tfds"))
    data.prepare(idx_dir, path, verify_checksums=False)
    return path


@pytest.fixture
def bad_dir(tmp_path, synthetic):
    """A copy of the synthetic files, uncompressed, for a test to damage."""
    for split in ("train", "test"):
        write_split_files(tmp_path, split, *synthetic[split], gz=False)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_config(data_dir):
    """The tiny run (`helpers.TINY`) on the synthetic data, two epochs; `.replace` what a test varies."""
    return tiny(data_dir)


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
    """A tfds folder that `train` prepares from $MNIST_JAX_IDX_DIR on first use."""
    if not os.environ.get(data.IDX_DIR_ENV):
        pytest.skip(f"${data.IDX_DIR_ENV} is not set: no real MNIST files")
    return str(tmp_path_factory.mktemp("tfds-real"))
