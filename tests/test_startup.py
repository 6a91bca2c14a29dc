"""Start-up: no TensorFlow unless needed, the checked array file, few compilations, the compilation cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_jax import array_cache, data
from mnist_jax.compilation import CACHE_ENV, default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--layer-sizes", "784,16,10", "--batch-size", "32", "--epochs", "2", "--eval-batch-size", "62"]


def python(code: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("pipeline, loads_tensorflow", [("device", False), ("stream", True)])
def test_tensorflow_loads_only_for_the_stream_path(data_dir, pipeline, loads_tensorflow):
    code = ("import sys\n"
            "from mnist_jax import train, Config\n"
            "assert 'tensorflow' not in sys.modules\n"
            f"result = train(Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=1, eval_batch_size=62, "
            f"pipeline={pipeline!r}, data_dir={data_dir!r}))\n"
            "print('tensorflow' in sys.modules, result.final_test_accuracy)")
    loaded, accuracy = python(code).split()
    assert loaded == str(loads_tensorflow) and float(accuracy) > 0.5


@pytest.fixture
def dataset(tmp_path, data_dir) -> tuple[str, str]:
    """A copy of the prepared synthetic dataset (its data dir and version folder), free to damage."""
    shutil.copytree(data_dir, tmp_path / "tfds")
    folder = str(tmp_path / "tfds")
    return folder, os.path.join(folder, "mnist", data.VERSION)


def through_tfds(folder: str) -> dict[str, np.ndarray]:
    from mnist_jax import tfds_source

    arrays = {}
    for split in array_cache.SPLITS:
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
    stored, state = array_cache.read(version_dir, array_cache.source_digest(version_dir))
    assert state == "ok"
    assert_same(stored, expected)
    assert_same(data.decoded_splits(folder), expected)
    images, labels = data.load_split("train[10:20]", folder)
    np.testing.assert_array_equal(labels, expected["train_labels"][10:20])
    np.testing.assert_array_equal(images, expected["train_images"][10:20])


def test_a_valid_array_file_is_what_loading_reads(dataset):
    folder, version_dir = dataset
    arrays = through_tfds(folder)
    arrays["test_labels"] = (arrays["test_labels"] + 1) % 10  # a consistent file with other labels
    array_cache.write(version_dir, arrays, array_cache.source_digest(version_dir))
    np.testing.assert_array_equal(data.load_split("test", folder)[1], arrays["test_labels"])


@pytest.mark.parametrize("fault", ["stale", "damaged", "truncated"])
def test_a_stale_or_damaged_array_file_is_rebuilt_from_tfds(dataset, fault):
    folder, version_dir = dataset
    path = array_cache.path(version_dir)
    if fault == "stale":  # the dataset changed since the file was written
        with open(os.path.join(version_dir, "dataset_info.json"), "a") as f:
            f.write("\n")
    elif fault == "damaged":  # a byte of the image data flipped
        raw = bytearray(Path(path).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        Path(path).write_bytes(bytes(raw))
    else:
        Path(path).write_bytes(Path(path).read_bytes()[:1000])
    source = array_cache.source_digest(version_dir)
    assert array_cache.read(version_dir, source)[1] == ("stale" if fault == "stale" else "damaged")
    assert_same(data.decoded_splits(folder), through_tfds(folder))
    assert array_cache.read(version_dir, source)[1] == "ok"  # rewritten


def test_a_damaged_dataset_is_not_served_from_its_array_file(dataset):
    folder, version_dir = dataset
    record = next(p for p in Path(version_dir).iterdir() if "train.tfrecord" in p.name)
    record.write_bytes(record.read_bytes()[:100])
    with pytest.raises(data.DataError, match="damaged"):
        data.load_split("train", folder)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "mnist_jax" / "jax-compilation")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == os.path.expanduser("~/.cache/mnist_jax/jax-compilation")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == str(tmp_path / "elsewhere")
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache_dir() is None


def scores(summary: dict) -> list[dict]:
    """Every epoch's accuracies and losses (not its timings)."""
    return [{k: v for k, v in m.items() if k.endswith(("accuracy", "loss"))} for m in summary["history"]]


def train_command(data_dir: str, out: Path, env: dict, *flags: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mnist_jax.cli", "train", *SMALL, "--data-dir", data_dir,
                           "--out", str(out), "--quiet", *flags], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_a_run_compiles_three_programs_and_a_second_run_loads_them_from_the_cache(data_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV} | {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = train_command(data_dir, tmp_path / "first", env)
    # Initialization, the epoch and the evaluation of every split: nothing compiled op by op.
    assert (first["compilations"], first["compilations_from_cache"]) == (3, 0)
    assert first["compile_seconds"] > 0 and first["data_seconds"] > 0
    assert len(os.listdir(tmp_path / "xdg" / "mnist_jax" / "jax-compilation")) >= 3
    second = train_command(data_dir, tmp_path / "second", env)
    assert (second["compilations"], second["compilations_from_cache"]) == (3, 3)
    assert scores(second) == scores(first)  # loaded programs give the same results
    off = train_command(data_dir, tmp_path / "off", env, "--no-compilation-cache")
    assert off["compilations_from_cache"] == 0
    moved = train_command(data_dir, tmp_path / "moved", env, "--compilation-cache", str(tmp_path / "moved-cache"))
    assert moved["compilations_from_cache"] == 0 and len(os.listdir(tmp_path / "moved-cache")) >= 3
