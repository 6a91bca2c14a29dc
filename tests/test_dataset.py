"""The data's way in and out: preparing the tfds dataset, the checked array file, loading the
splits, and a damaged or missing dataset reported with its fix."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnist_jax import Config, ConfigError, data
from mnist_jax.cli import main
from mnist_jax.data import array_file, idx
from mnist_jax.data.dataset import VERSION, decoded
from mnist_jax.data.idx import find_file, read_bytes
from mnist_jax.errors import DataError
from tests.helpers import NUM_TEST, NUM_TRAIN, TINY_FLAGS, damage


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
    assert {s: info.splits[s].num_examples for s in ("train", "test")} == {
        "train": NUM_TRAIN,
        "test": NUM_TEST,
    }
    assert str(info.features) == str(tfds.builder_cls("mnist")(data_dir=data_dir).info.features)
    assert info.supervised_keys == ("image", "label")


def test_load_split_in_file_order_recovers_the_raw_order(data_dir, synthetic):
    for split in ("train", "test"):
        images, labels = data.load(data_dir)[split].in_file_order(split)
        assert images.shape == (len(labels), 28, 28, 1) and labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], synthetic[split][0])
        np.testing.assert_array_equal(labels, synthetic[split][1])
    stored_images = data.load(data_dir)["train"].images
    assert not np.array_equal(stored_images[..., 0], synthetic["train"][0])  # tfds's hashed order


def test_missing_dataset_without_idx_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.IDX_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "load", _offline_load)
    with pytest.raises(DataError, match="mnist-jax prepare --idx-dir"):
        data.load(str(tmp_path))


def _offline_load(*args, **kwargs):
    raise ConnectionError("Max retries exceeded: Name or service not known")


def test_load_split_prepares_from_the_idx_env_var(idx_dir, tmp_path, monkeypatch, synthetic):
    monkeypatch.setenv(data.IDX_DIR_ENV, idx_dir)
    with pytest.raises(DataError, match="checksum mismatch"):  # published MD5s are checked
        data.load(str(tmp_path))
    assert not data.is_prepared(str(tmp_path))
    # Declare the synthetic files' own MD5s as the published ones: now it prepares.
    md5s = {
        name: hashlib.md5(read_bytes(find_file(idx_dir, name))).hexdigest()
        for name in idx.MNIST_MD5
    }
    monkeypatch.setattr(idx, "MNIST_MD5", md5s)
    _, labels = data.load(str(tmp_path))["test"].in_file_order("test")
    np.testing.assert_array_equal(labels, synthetic["test"][1])
    assert data.is_prepared(str(tmp_path))


def test_prepare_verifies_checksums_unless_told_not_to(idx_dir, tmp_path, capsys):
    assert main(["prepare", "--idx-dir", idx_dir, "--data-dir", str(tmp_path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "mnist" / "3.0.1").exists()
    assert (
        main(["prepare", "--idx-dir", idx_dir, "--data-dir", str(tmp_path), "--skip-checksums"])
        == 0
    )
    assert (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").exists()


def _damage(folder: str, how: str) -> None:
    record = next(
        os.path.join(root, f)
        for root, _, files in os.walk(folder)
        for f in files
        if "train.tfrecord" in f
    )
    if how == "delete":
        os.remove(record)
    elif how == "truncate":
        os.truncate(record, os.path.getsize(record) // 2)
    else:
        with open(record, "r+b") as f:
            f.seek(os.path.getsize(record) // 2)
            f.write(b"\xff" * 64)


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_a_damaged_dataset_is_reported_with_the_fix(data_dir, idx_dir, tmp_path, capsys, how):
    damaged = str(tmp_path / "tfds")
    shutil.copytree(data_dir, damaged)
    _damage(damaged, how)
    expected = rf"the tfds mnist dataset in {re.escape(damaged)} is damaged .*mnist-jax prepare"
    with pytest.raises(DataError, match=expected):
        data.load(damaged)
    assert main(["train", *TINY_FLAGS, "--epochs", "1", "--data-dir", damaged]) == 1
    assert "is damaged" in capsys.readouterr().err
    data.prepare(idx_dir, damaged, verify_checksums=False)  # the fix the message gives
    images = data.load(damaged)["train"].images
    assert len(images) == 300


@pytest.fixture
def dataset(tmp_path, data_dir) -> tuple[str, str]:
    """A copy of the prepared synthetic dataset (its data dir and version folder), free to
    damage."""
    shutil.copytree(data_dir, tmp_path / "tfds")
    folder = str(tmp_path / "tfds")
    return folder, os.path.join(folder, "mnist", VERSION)


def through_tfds(folder: str) -> dict[str, np.ndarray]:
    from mnist_jax.data import tfds_source

    arrays = {}
    for split in array_file.SPLITS:
        images, labels, _ = tfds_source.read(split, folder)
        arrays |= {f"{split}_images": images, f"{split}_labels": labels.astype(np.int32)}
    return arrays


def assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_prepare_writes_the_array_file_and_it_holds_what_tfds_reads(dataset):
    folder, version_dir = dataset
    expected = through_tfds(folder)
    stored, state = array_file.read(version_dir, array_file.source_digest(version_dir))
    assert state == "ok"
    assert_same(stored, expected)
    assert_same(decoded(folder), expected)
    shares = data.load(folder, validation_size=NUM_TRAIN - 10)  # slices of the training split
    np.testing.assert_array_equal(shares["validation"].labels, expected["train_labels"][10:])
    np.testing.assert_array_equal(shares["validation"].images, expected["train_images"][10:])
    np.testing.assert_array_equal(shares["train"].images, expected["train_images"][:10])


def test_a_valid_array_file_is_what_loading_reads(dataset):
    folder, version_dir = dataset
    arrays = through_tfds(folder)
    arrays["test_labels"] = (arrays["test_labels"] + 1) % 10  # a consistent file with other labels
    array_file.write(version_dir, arrays, array_file.source_digest(version_dir))
    np.testing.assert_array_equal(data.load(folder)["test"].labels, arrays["test_labels"])


@pytest.mark.parametrize("fault", ["stale", "damaged", "truncated"])
def test_a_stale_or_damaged_array_file_is_rebuilt_from_tfds(dataset, fault):
    folder, version_dir = dataset
    path = array_file.path(version_dir)
    if fault == "stale":  # the dataset changed since the file was written
        with open(os.path.join(version_dir, "dataset_info.json"), "a") as f:
            f.write("\n")
    elif fault == "damaged":  # a byte of the image data flipped
        raw = bytearray(Path(path).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        Path(path).write_bytes(bytes(raw))
    else:
        Path(path).write_bytes(Path(path).read_bytes()[:1000])
    source = array_file.source_digest(version_dir)
    assert array_file.read(version_dir, source)[1] == ("stale" if fault == "stale" else "damaged")
    assert_same(decoded(folder), through_tfds(folder))
    assert array_file.read(version_dir, source)[1] == "ok"  # rewritten


def test_a_damaged_dataset_is_not_served_from_its_array_file(dataset):
    folder, version_dir = dataset
    record = next(p for p in Path(version_dir).iterdir() if "train.tfrecord" in p.name)
    record.write_bytes(record.read_bytes()[:100])
    with pytest.raises(DataError, match="damaged"):
        data.load(folder)


def test_validation_size_is_checked(data_dir):
    with pytest.raises(ConfigError, match="validation_size needs shuffle"):
        Config(validation_size=10, shuffle=False)
    with pytest.raises(ConfigError, match="leaves no training examples"):
        data.load(data_dir, validation_size=NUM_TRAIN)


def test_an_array_file_changed_under_its_old_digest_is_rebuilt(dataset):
    """A well-formed file (every zip CRC right) whose arrays no longer match the content digest it
    carries: only the digest comparison can catch it."""
    folder, version_dir = dataset
    source = array_file.source_digest(version_dir)
    arrays, state = array_file.read(version_dir, source)
    assert state == "ok"
    stale_digest = array_file.content_digest(arrays)
    arrays["test_labels"] = (arrays["test_labels"] + 1) % 10
    np.savez(
        array_file.path(version_dir),
        **arrays,
        source_digest=np.array(source),
        content_digest=np.array(stale_digest),
    )
    assert array_file.read(version_dir, source) == (None, "damaged")
    expected = through_tfds(folder)
    np.testing.assert_array_equal(data.load(folder)["test"].labels, expected["test_labels"])
    assert array_file.read(version_dir, source)[1] == "ok"  # rewritten from tfds
