"""Shared fixtures: small synthetic IDX files and their prepared tfds dataset."""

import os
import tempfile

import jax
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.compilation import CACHE_ENV
from mnist_jax.idx import SPLIT_FILES, write_idx

NUM_TRAIN, NUM_TEST = 300, 100

# The command keeps compiled programs in the user's cache folder: the tests' commands share one of
# their own (set here, so the commands they start in subprocesses inherit it).
os.environ.setdefault(CACHE_ENV, tempfile.mkdtemp(prefix="mnist-jax-tests-compilation-"))


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


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
    """A tfds folder that `train` prepares from $MNIST_JAX_IDX_DIR on first use."""
    if not os.environ.get(data.IDX_DIR_ENV):
        pytest.skip(f"${data.IDX_DIR_ENV} is not set: no real MNIST files")
    return str(tmp_path_factory.mktemp("tfds-real"))


def assert_models_equal_their_runs(result, config, seeds, rtol: float, atol: float) -> None:
    """Each seed's model of a sweep or grid cell (`result`) against its own `train` run of `config`:
    parameters to the tolerances, accuracies exactly, losses to 1e-5."""
    from mnist_jax import train

    for i, seed in enumerate(seeds):
        alone = train(config.replace(seed=seed))
        for swept, single in zip(jax.tree.leaves(result.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(swept)[i], single, rtol=rtol, atol=atol)
        np.testing.assert_allclose(result.histories[i, :, :2], [(m.train_accuracy, m.test_accuracy)
                                                                for m in alone.history], atol=1e-12)
        np.testing.assert_allclose(result.histories[i, :, 2:4], [(m.train_loss, m.test_loss)
                                                                 for m in alone.history], rtol=1e-5)
