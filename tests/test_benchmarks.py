"""The benchmark command end to end on a tiny configuration."""

import importlib.util
import json
import struct

import pytest

from benchmarks.run import main, matmul_flops_per_epoch, scaled_widths


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_matmul_flops_of_the_seed_mlp():
    # 2 * N * (forward + weight gradients + input gradients of layers 2 and 3)
    assert matmul_flops_per_epoch((784, 200, 100, 10), 60_000) == 2 * 60_000 * (2 * 177_800 + 21_000)
    assert scaled_widths((784, 200, 100, 10), 0.5) == (784, 100, 50, 10)


@pytest.mark.slow
def test_bench_runs_end_to_end_and_writes_well_formed_outputs(data_dir, tmp_path):
    results = main(["--out", str(tmp_path), "--data-dir", data_dir, "--epochs", "2", "--repeats", "2",
                    "--warmup", "0", "--reference-epochs", "1", "--layer-sizes", "784,16,10",
                    "--batch-sizes", "32,64", "--width-scales", "1,2", "--device-counts", "1,2", "--sweep-seeds", "2"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["platforms"].keys() == results["platforms"].keys() and "cpu" in saved["platforms"]
    assert saved["fingerprint"]["cpu"]["cores"] > 0 and saved["fingerprint"]["versions"]["jax"]
    cpu = saved["platforms"]["cpu"]
    assert set(cpu["pipelines"]) == {"stream", "device", "device float64 (seed preset)"}
    for timing in cpu["pipelines"].values():
        s = timing["seconds_per_epoch"]
        assert s["n"] == 4 and 0 < s["min"] <= s["median"] <= s["max"]
        assert timing["compile_seconds"]["median"] > 0 and 0 <= timing["final_test_accuracy"]["median"] <= 1
    assert [row["batch_size"] for row in cpu["sweeps"]["batch_size"]] == [32, 64]
    assert [row["layer_sizes"] for row in cpu["sweeps"]["width_scale"]] == [[784, 16, 10], [784, 32, 10]]
    assert cpu["seed_sweep"]["seeds"] == 2 and cpu["seed_sweep"]["sweep_seconds"] > 0
    scaling = cpu["device_scaling"]
    assert scaling["simulated"] and "overhead, not speedup" in scaling["note"]
    assert sorted((r["pipeline"], r["devices"]) for r in scaling["rows"]) == [
        ("device", 1), ("device", 2), ("stream", 1), ("stream", 2)]
    assert all(r["seconds_per_epoch"] > 0 for r in scaling["rows"])
    assert cpu["gemm_gflops"] > 0 and cpu["floor_seconds_per_epoch"] > 0
    assert saved["environment"]["versions"]["jax"]
    autograd = saved["references"]["autograd float64 (seed notebook)"]
    assert autograd["seconds_per_epoch"]["median"] > 0
    torch = saved["references"]["pytorch-cpu float32"]
    assert ("seconds_per_epoch" in torch) == (importlib.util.find_spec("torch") is not None)
    table = (tmp_path / "results.md").read_text()
    for name in ("mnist_jax stream", "mnist_jax device", "autograd float64", "pytorch-cpu float32"):
        assert f"| {name}" in table
    assert "Device-count scaling on cpu (simulated CPU devices" in table and "Seed sweep on cpu: 2 seeds" in table
    assert png_size(tmp_path / "chart.png")[0] > 500 and png_size(tmp_path / "sweeps.png")[0] > 1000


def test_the_startup_split_and_ratios_by_hand():
    from benchmarks.startup import MODEL_EPOCHS, phases, ratios

    train = {"wall": 10.0, "compile": 1.0, "train": 4.0, "evaluation": 2.0}
    row = {"import train": 1.5, "import sweep": 1.5, "data": 0.5, "library import": 1.2, "tensorflow loaded": False,
           "train": train, "grid": {"wall": 40.0, "compile": 2.0, "train and evaluation": 30.0}}
    assert phases(row, "train") == {"import": 1.5, "data": 0.5, "compile": 1.0, "train": 4.0, "evaluation": 2.0,
                                    "other": 1.0}
    assert phases(row, "grid")["other"] == 40.0 - 1.5 - 0.5 - 2.0 - 30.0
    line, = ratios({"epochs": 5, "after": row})
    # wall / train = 2.5; one model-epoch (4 + 2) / 5 = 1.2 s; start-up 10 - 6 = 4 s; (40 - 4) / (24 * 1.2)
    assert MODEL_EPOCHS == 24
    assert line.startswith("- after: `train` wall 2.50x its training seconds;")
    assert "1.20 s without TensorFlow" not in line and "1.20 s (without TensorFlow)" in line
    assert f"the grid {36 / 28.8:.2f}x its 24 model-epochs at one model's 1.20 s" in line


def test_the_machine_fingerprint(monkeypatch):
    import datetime
    import os
    import subprocess
    from pathlib import Path

    import jax
    import jax.extend.backend

    from mnist_jax.environment import fingerprint

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    got = fingerprint()
    assert got["cpu"]["cores"] == os.cpu_count()
    if Path("/proc/cpuinfo").exists():
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        assert got["cpu"]["model"] == models[0]
    assert [(a["platform"], a["kind"]) for a in got["accelerators"]] == [
        (d.platform, d.device_kind) for d in jax.devices() if d.platform != "cpu"]
    # Keyed by JAX's backend names ("cpu", "cuda", ...), each with the version its runtime reports.
    assert set(got["platform_versions"]) == set(jax.extend.backend.backends())
    assert all(isinstance(v, str) and v for v in got["platform_versions"].values())
    assert got["versions"]["jax"] == jax.__version__
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        assert got["git_commit"] == head
    assert got["xla_flags"] == "--xla_cpu_enable_fast_math=false"
    age = datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(got["date"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)
