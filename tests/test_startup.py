"""Start-up: no TensorFlow unless needed, three compilations, the compilation cache; the start-up
benchmark's arithmetic."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_jax.runtime.compilation import CACHE_ENV, default_cache_dir
from tests.helpers import ROOT, child_env, run_in_a_child

SMALL = [
    "--layer-sizes",
    "784,16,10",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--eval-batch-size",
    "62",
]


def python(code: str) -> str:
    proc = run_in_a_child([sys.executable, "-c", code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("pipeline, loads_tensorflow", [("device", False), ("stream", True)])
def test_tensorflow_loads_only_for_the_stream_path(data_dir, pipeline, loads_tensorflow):
    code = (
        "import sys\n"
        "from mnist_jax import train, Config\n"
        "assert 'tensorflow' not in sys.modules\n"
        "result = train(Config(layer_sizes=(784, 16, 10), batch_size=32, num_epochs=1, "
        f"eval_batch_size=62, pipeline={pipeline!r}, data_dir={data_dir!r}))\n"
        "print('tensorflow' in sys.modules, result.final_test_accuracy)"
    )
    loaded, accuracy = python(code).split()
    assert loaded == str(loads_tensorflow) and float(accuracy) > 0.5


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
    """Every epoch's accuracies and losses in a summary (not its timings)."""
    return [
        {k: v for k, v in m.items() if k.endswith(("accuracy", "loss"))}
        for m in summary["history"]
    ]


def train_command(data_dir: str, out: Path, env: dict, *flags: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_jax.cli",
            "train",
            *SMALL,
            "--data-dir",
            data_dir,
            "--out",
            str(out),
            "--quiet",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_a_run_compiles_three_programs_and_a_second_run_loads_them_from_the_cache(
    data_dir, tmp_path
):
    env = {k: v for k, v in child_env().items() if k != CACHE_ENV} | {
        "XDG_CACHE_HOME": str(tmp_path / "xdg")
    }
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
    moved = train_command(
        data_dir, tmp_path / "moved", env, "--compilation-cache", str(tmp_path / "moved-cache")
    )
    assert moved["compilations_from_cache"] == 0 and len(os.listdir(tmp_path / "moved-cache")) >= 3


def test_the_startup_split_and_ratios_by_hand():
    from benchmarks.startup import MODEL_EPOCHS, phases, ratios

    train = {"wall": 10.0, "compile": 1.0, "train": 4.0, "evaluation": 2.0}
    row = {
        "import train": 1.5,
        "import sweep": 1.5,
        "data": 0.5,
        "library import": 1.2,
        "tensorflow loaded": False,
        "train": train,
        "grid": {"wall": 40.0, "compile": 2.0, "train and evaluation": 30.0},
    }
    assert phases(row, "train") == {
        "import": 1.5,
        "data": 0.5,
        "compile": 1.0,
        "train": 4.0,
        "evaluation": 2.0,
        "other": 1.0,
    }
    assert phases(row, "grid")["other"] == 40.0 - 1.5 - 0.5 - 2.0 - 30.0
    (line,) = ratios({"epochs": 5, "after": row})
    # wall / train = 2.5; one model-epoch (4 + 2) / 5 = 1.2 s; start-up 10 - 6 = 4 s;
    # (40 - 4) / (24 * 1.2)
    assert MODEL_EPOCHS == 24
    assert line.startswith("- after: `train` wall 2.50x its training seconds;")
    assert "1.20 s without TensorFlow" not in line and "1.20 s (without TensorFlow)" in line
    assert f"the grid {36 / 28.8:.2f}x its 24 model-epochs at one model's 1.20 s" in line
