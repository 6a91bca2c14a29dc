"""Reading raw IDX files: every kind of bad file named with its fault, and fuzzed files."""

import gzip
import os
import random
import shutil

import numpy as np
import pytest

from mnist_jax.data.idx import read_split, write_idx
from mnist_jax.errors import DataError
from tests.helpers import NUM_TRAIN, damage

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


def _set_count(raw, n):
    raw[4:8] = n.to_bytes(4, "big")
    return raw


@pytest.mark.parametrize(
    "name, change, message",
    [
        (TRAIN_IMAGES, lambda raw: raw[:-100], "truncated"),
        (TRAIN_IMAGES, lambda raw: raw[:10], "truncated header"),
        (TRAIN_IMAGES, lambda raw: raw + b"\0", "trailing bytes"),
        (
            TRAIN_IMAGES,
            lambda raw: b"\0\0\x08\x01" + raw[4:],
            "wrong magic number 0x00000801, expected 0x00000803",
        ),
        (TRAIN_LABELS, lambda raw: b"\x12\x34" + raw[2:], "wrong magic number"),
        (
            TRAIN_LABELS,
            lambda raw: _set_count(raw, NUM_TRAIN - 1)[:-1],
            "holds 300 images but .* 299 labels",
        ),
        (TRAIN_LABELS, lambda raw: raw[:-1] + b"\x0c", "label 12 is out of range"),
    ],
)
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


def _mutations(rng: random.Random, valid: bytes):
    """Damaged variants of a valid IDX file's bytes."""
    data = bytearray(valid)
    kind = rng.randrange(6)
    if kind == 0:  # flip random bytes anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # cut it short
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # trailing junk
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 50)))
    elif kind == 3:  # a random header (magic, dims and sizes), up to huge
        data[:16] = bytes(rng.randrange(256) for _ in range(16))
    elif kind == 4:  # a damaged gzip stream
        packed = bytearray(gzip.compress(bytes(data)))
        packed[rng.randrange(2, len(packed))] ^= 1 << rng.randrange(8)
        return bytes(packed), ".gz"
    else:  # random bytes
        data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return bytes(data), ""


def test_the_idx_reader_fails_only_with_data_errors_naming_the_file(tmp_path, synthetic):
    images, labels = synthetic["train"][0][:20], synthetic["train"][1][:20]
    valid_dir = tmp_path / "valid"
    valid_dir.mkdir()
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        write_idx(str(valid_dir / name), array)
    rng = random.Random(0)
    outcomes = {"error": 0, "read": 0}
    for trial in range(400):
        fuzz_dir = tmp_path / f"fuzz-{trial}"
        shutil.copytree(valid_dir, fuzz_dir)
        victim = rng.choice(["train-images-idx3-ubyte", "train-labels-idx1-ubyte"])
        damaged, suffix = _mutations(rng, (valid_dir / victim).read_bytes())
        os.remove(fuzz_dir / victim)
        (fuzz_dir / (victim + suffix)).write_bytes(damaged)
        try:
            split = read_split(str(fuzz_dir), "train", verify_checksums=False)
        except DataError as e:
            assert victim in str(e), (trial, str(e))
            outcomes["error"] += 1
        else:  # a flip inside the pixels or labels can leave a valid file
            assert split.images.shape == (len(split.labels), 28, 28) and (split.labels < 10).all()
            outcomes["read"] += 1
        shutil.rmtree(fuzz_dir)
    assert outcomes["error"] > 250 and outcomes["read"] > 0
