"""Reading IDX files, every kind of bad file, and building the tfds dataset from them."""

import gzip
import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnist_jax import data, idx
from mnist_jax.idx import DataError, find_file, read_bytes, read_split
from tests.conftest import NUM_TEST, NUM_TRAIN, write_split_files

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


def test_reads_gzipped_and_raw_files(idx_dir, synthetic):
    for split in ("train", "test"):
        got = read_split(idx_dir, split, verify_checksums=False)
        np.testing.assert_array_equal(got.images, synthetic[split][0])
        np.testing.assert_array_equal(got.labels, synthetic[split][1])


def test_synthetic_files_fail_the_published_checksums(idx_dir):
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}\.gz: checksum mismatch"):
        read_split(idx_dir, "train")


@pytest.fixture
def bad_dir(tmp_path, synthetic):
    """A copy of the synthetic files, uncompressed, for a test to damage."""
    for split in ("train", "test"):
        write_split_files(tmp_path, split, *synthetic[split], gz=False)
    return tmp_path


def damage(path, change):
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(raw)))


def _set_count(raw, n):
    raw[4:8] = n.to_bytes(4, "big")
    return raw


@pytest.mark.parametrize("name, change, message", [
    (TRAIN_IMAGES, lambda raw: raw[:-100], "truncated"),
    (TRAIN_IMAGES, lambda raw: raw[:10], "truncated header"),
    (TRAIN_IMAGES, lambda raw: raw + b"\0", "trailing bytes"),
    (TRAIN_IMAGES, lambda raw: b"\0\0\x08\x01" + raw[4:], "wrong magic number 0x00000801, expected 0x00000803"),
    (TRAIN_LABELS, lambda raw: b"\x12\x34" + raw[2:], "wrong magic number"),
    (TRAIN_LABELS, lambda raw: _set_count(raw, NUM_TRAIN - 1)[:-1], "holds 300 images but .* 299 labels"),
    (TRAIN_LABELS, lambda raw: raw[:-1] + b"\x0c", "label 12 is out of range"),
])
def test_bad_files_name_the_file_and_the_problem(bad_dir, name, change, message):
    damage(bad_dir / name, change)
    with pytest.raises(DataError, match=message) as error:
        read_split(str(bad_dir), "train", verify_checksums=False)
    assert os.path.basename(str(bad_dir / name)) in str(error.value)


def test_missing_and_broken_gzip_files(bad_dir):
    os.remove(bad_dir / TRAIN_LABELS)
    with pytest.raises(DataError, match=f"{TRAIN_LABELS}.*not found"):
        read_split(str(bad_dir), "train", verify_checksums=False)
    (bad_dir / (TRAIN_LABELS + ".gz")).write_bytes(gzip.compress(bytes(range(256)) * 40)[:60])
    with pytest.raises(DataError, match=f"{TRAIN_LABELS}.gz: cannot read"):
        read_split(str(bad_dir), "train", verify_checksums=False)


@pytest.mark.parametrize("verify", [True, False])
def test_prepare_of_bad_files_leaves_nothing_behind(bad_dir, tmp_path_factory, verify):
    if not verify:
        damage(bad_dir / "t10k-labels-idx1-ubyte", lambda raw: raw[:-5])
    out = tmp_path_factory.mktemp("tfds-bad")
    with pytest.raises(DataError):
        data.prepare(str(bad_dir), str(out), verify_checksums=verify)
    assert not data.is_prepared(str(out))
    assert not os.path.exists(out / "mnist" / "3.0.1")
    leftovers = os.listdir(out / "mnist") if os.path.exists(out / "mnist") else []
    assert leftovers == []


def test_prepared_dataset_is_tfds_mnist(data_dir):
    builder = tfds.builder("mnist", data_dir=data_dir)
    assert builder.is_prepared()
    info = builder.info
    assert (info.name, str(info.version)) == ("mnist", "3.0.1")
    assert {s: info.splits[s].num_examples for s in ("train", "test")} == {"train": NUM_TRAIN, "test": NUM_TEST}
    assert str(info.features) == str(tfds.builder_cls("mnist")(data_dir=data_dir).info.features)
    assert info.supervised_keys == ("image", "label")


def test_load_split_in_file_order_recovers_the_raw_order(data_dir, synthetic):
    for split in ("train", "test"):
        images, labels = data.load_split(split, data_dir, in_file_order=True)
        assert images.shape == (len(labels), 28, 28, 1) and labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], synthetic[split][0])
        np.testing.assert_array_equal(labels, synthetic[split][1])
    stored_images, _ = data.load_split("train", data_dir)
    assert not np.array_equal(stored_images[..., 0], synthetic["train"][0])  # tfds's hashed order


def test_missing_dataset_without_idx_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.IDX_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "load", _offline_load)
    with pytest.raises(DataError, match="mnist-jax prepare --idx-dir"):
        data.load_split("train", str(tmp_path))


def _offline_load(*args, **kwargs):
    raise ConnectionError("Max retries exceeded: Name or service not known")


def test_load_split_prepares_from_the_idx_env_var(idx_dir, tmp_path, monkeypatch, synthetic):
    monkeypatch.setenv(data.IDX_DIR_ENV, idx_dir)
    with pytest.raises(DataError, match="checksum mismatch"):  # published MD5s are checked
        data.load_split("test", str(tmp_path))
    assert not data.is_prepared(str(tmp_path))
    # Declare the synthetic files' own MD5s as the published ones: now it prepares.
    md5s = {name: hashlib.md5(read_bytes(find_file(idx_dir, name))).hexdigest() for name in idx.MNIST_MD5}
    monkeypatch.setattr(idx, "MNIST_MD5", md5s)
    _, labels = data.load_split("test", str(tmp_path), in_file_order=True)
    np.testing.assert_array_equal(labels, synthetic["test"][1])
    assert data.is_prepared(str(tmp_path))
