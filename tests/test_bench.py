"""The benchmark (`mnist-jax bench`, `bench compare`) on tiny data, and the machine fingerprint."""

import copy
import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest

from mnist_jax import Config, ConfigError, preset, train
from mnist_jax.bench.compare import compare, differences
from mnist_jax.bench.measure import cnn_flops_per_epoch, matmul_flops_per_epoch, scaled_widths
from mnist_jax.bench.render import CNN_ROW, USER_CNN_ROW, markdown
from mnist_jax.bench.settings import QUICK_BENCH
from mnist_jax.cli import main
from tests.helpers import NUM_TRAIN, png_size


def test_matmul_flops_of_the_seed_mlp():
    # 2 * N * (forward + weight gradients + input gradients of layers 2 and 3)
    assert matmul_flops_per_epoch((784, 200, 100, 10), 60_000) == 2 * 60_000 * (
        2 * 177_800 + 21_000
    )
    assert scaled_widths((784, 200, 100, 10), 0.5) == (784, 100, 50, 10)


def test_the_cnns_flops_by_hand():
    # Flax's CNN: conv 28x28x32 of 3x3x1, conv 14x14x64 of 3x3x32, dense 3136x256, dense 256x10
    # multiply-adds.
    macs = [28 * 28 * 32 * 9, 14 * 14 * 64 * 9 * 32, 3136 * 256, 256 * 10]
    assert cnn_flops_per_epoch(preset("cnn"), 60_000) == 2 * 60_000 * (
        2 * sum(macs) + sum(macs[1:])
    )
    # The speedrun's valid 5x5 and 3x3 convolutions: 24x24 maps, pooled to 12, then 10x10, pooled
    # to 5.
    speedrun = preset("speedrun")
    macs = [24 * 24 * 16 * 25, 10 * 10 * 32 * 9 * 16, 5 * 5 * 32 * 256, 256 * 10]
    assert cnn_flops_per_epoch(speedrun, 1) == 2 * (2 * sum(macs) + sum(macs[1:]))


QUICK_ARGS = [
    "--layer-sizes",
    "784,16,10",
    "--batch-sizes",
    "32",
    "--width-scales",
    "2",
    "--repeats",
    "2",
]


@pytest.fixture(scope="module")
def quick_bench(data_dir, tmp_path_factory):
    """`mnist-jax bench --quick` on the tiny data: its folder and exit status."""
    out = tmp_path_factory.mktemp("bench")
    return out, main(["bench", "--quick", "--out", str(out), "--data-dir", data_dir, *QUICK_ARGS])


def test_bench_quick_writes_results_with_a_fingerprint_and_the_rendered_table(
    quick_bench, data_dir
):
    out, status = quick_bench
    assert status == 0
    saved = json.loads((out / "results.json").read_text())
    # The quick settings, with the flags given on top.
    assert saved["settings"] == {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in vars(QUICK_BENCH).items()},
        "layer_sizes": [784, 16, 10],
        "batch_sizes": [32],
        "width_scales": [2.0],
        "repeats": 2,
    }
    assert saved["fingerprint"]["cpu"]["cores"] > 0 and saved["fingerprint"]["versions"]["jax"]
    cpu = saved["platforms"]["cpu"]
    assert set(cpu["pipelines"]) == {
        "stream",
        "device",
        "device float64 (seed preset)",
        CNN_ROW,
        USER_CNN_ROW,
    }
    # The CNN's row: the cnn preset for one epoch, its floor from the CNN's FLOPs, PyTorch's CNN
    # beside it.
    assert saved["cnn_config"] == preset("cnn").replace(num_epochs=1, data_dir=data_dir).to_dict()
    assert cpu["pipelines"][CNN_ROW]["seconds_per_epoch"]["n"] == 1
    assert 0 <= cpu["pipelines"][CNN_ROW]["final_test_accuracy"]["median"] <= 1
    assert cpu["cnn_floor_seconds_per_epoch"] == pytest.approx(
        cnn_flops_per_epoch(preset("cnn"), NUM_TRAIN) / cpu["gemm_gflops"] / 1e9
    )
    assert "pytorch-cpu float32 cnn" in saved["references"]
    # The same network written by a user, through --model: its convolutions rewritten on a CPU.
    user = cpu["pipelines"][USER_CNN_ROW]
    assert user["seconds_per_epoch"]["n"] == 1 and 0 <= user["final_test_accuracy"]["median"] <= 1
    assert user["convolutions"] == {"im2col": 1, "winograd": 1}
    assert "convolutions" not in cpu["pipelines"][CNN_ROW]
    for name, timing in cpu["pipelines"].items():
        if name in (CNN_ROW, USER_CNN_ROW):
            continue  # checked above: their own runs
        s = timing["seconds_per_epoch"]
        assert s["n"] == 2 and 0 < s["min"] <= s["median"] <= s["max"]  # 2 runs of 1 epoch
        assert timing["compile_seconds"]["median"] > 0
    # The reported accuracy is what the same training run reaches on its own.
    alone = train(
        Config(
            layer_sizes=(784, 16, 10), num_epochs=1, data_dir=data_dir, platform="cpu", devices=1
        )
    )
    assert cpu["pipelines"]["device"]["final_test_accuracy"]["median"] == alone.final_test_accuracy
    assert [row["batch_size"] for row in cpu["sweeps"]["batch_size"]] == [32]
    assert [row["layer_sizes"] for row in cpu["sweeps"]["width_scale"]] == [[784, 32, 10]]
    assert cpu["seed_sweep"]["seeds"] == 2 and cpu["seed_sweep"]["sweep_seconds"] > 0
    scaling = cpu["device_scaling"]
    assert scaling["simulated"] and sorted(
        (r["pipeline"], r["devices"]) for r in scaling["rows"]
    ) == [("device", 2), ("stream", 2)]
    assert cpu["floor_seconds_per_epoch"] == pytest.approx(
        matmul_flops_per_epoch((784, 16, 10), NUM_TRAIN) / cpu["gemm_gflops"] / 1e9
    )
    assert (
        saved["references"]["autograd float64 (seed notebook)"]["seconds_per_epoch"]["median"] > 0
    )
    table = (out / "results.md").read_text()
    assert table == markdown(saved)
    for name in (
        "mnist_jax stream",
        "mnist_jax device",
        f"mnist_jax {CNN_ROW}",
        f"mnist_jax {USER_CNN_ROW}",
        "autograd float64",
        "pytorch-cpu float32",
    ):
        assert f"| cpu | {name}" in table
    user_seconds = user["seconds_per_epoch"]["median"]
    ratio = user_seconds / cpu["pipelines"][CNN_ROW]["seconds_per_epoch"]["median"]
    assert (
        f"through `--model` took {user_seconds:.2f} s per epoch, {ratio:.2f}x the built-in"
        in table
    )
    assert png_size(out / "chart.png")[0] > 500 and png_size(out / "sweeps.png")[0] > 1000


def as_gpu_machine(results: dict, speedup: float) -> dict:
    """The results as if from a machine with a GPU `speedup` times faster than its CPU."""
    other = copy.deepcopy(results)
    other["fingerprint"]["accelerators"] = [
        {"platform": "gpu", "kind": "NVIDIA H200", "memory_bytes": 1 << 37}
    ]
    gpu = copy.deepcopy(other["platforms"]["cpu"])
    for timing in gpu["pipelines"].values():
        seconds = timing["seconds_per_epoch"]
        timing["seconds_per_epoch"] = {
            k: v / speedup if k != "n" else v for k, v in seconds.items()
        }
    other["platforms"]["gpu"] = gpu
    return other


def test_compare_gives_each_rows_ratio_to_the_baseline_and_refuses_other_settings(
    quick_bench, tmp_path
):
    out, _ = quick_bench
    here = json.loads((out / "results.json").read_text())
    here["platforms"] = {
        "cpu": here["platforms"]["cpu"]
    }  # as from a CPU-only machine, on any host
    here["fingerprint"]["accelerators"] = []
    paths = {
        "cpu": tmp_path / "cpu.json",
        "gpu": tmp_path / "gpu.json",
        "other": tmp_path / "other.json",
    }
    paths["cpu"].write_text(json.dumps(here))
    paths["gpu"].write_text(json.dumps(as_gpu_machine(here, 4.0)))
    different = as_gpu_machine(here, 4.0)
    different["settings"]["epochs"], different["config"]["batch_size"] = 3, 128
    paths["other"].write_text(json.dumps(different))

    cpu, gpu = str(paths["cpu"]), str(paths["gpu"])
    assert main(["bench", "compare", cpu, gpu, "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "compare.md").read_text()
    # Each result is named by its machine: the accelerators, else the CPU and its cores.
    cpu_name = (
        f"{here['fingerprint']['cpu']['model']} ({here['fingerprint']['cpu']['cores']} cores)"
    )
    assert f"vs {cpu_name} |" in text and f"- **{cpu_name}** (`{cpu}`)" in text
    rows = [
        line.split(" | ") for line in text.splitlines() if line.startswith("| 1 x NVIDIA H200 | ")
    ]
    ratios = {(row[1], row[2]): float(row[-1].rstrip(" |")) for row in rows}
    # The GPU rows against the baseline's CPU rows (it has no GPU), the CPU rows against its CPU
    # rows.
    assert ratios[("gpu", "mnist_jax device")] == ratios[("gpu", "mnist_jax stream")] == 0.25
    assert (
        ratios[("cpu", "mnist_jax device")]
        == ratios[("cpu", "autograd float64 (seed notebook)")]
        == 1.0
    )
    timed_references = sum(
        "seconds_per_epoch" in here["references"][name]
        for name in ("pytorch-cpu float32", "pytorch-cpu float32 cnn")
    )
    # each platform's 5 rows, autograd, PyTorch's where timed
    assert len(rows) == 5 + 5 + 1 + timed_references
    assert "1 x NVIDIA H200" in text and png_size(tmp_path / "cmp" / "compare.png")[0] > 500
    # Against the GPU machine as the baseline, its CPU rows are the reference for this CPU's.
    assert "| 4.00 |" in compare([cpu, gpu], str(tmp_path / "cmp2"), baseline=gpu)

    # A result made before a setting existed holds it at its default; at another value, it is
    # refused.
    older = json.loads(json.dumps(here))
    del older["config"]["cnn_form"]
    paths["older"] = tmp_path / "older.json"
    paths["older"].write_text(json.dumps(older))
    assert (
        differences(here, older) == []
        and main(["bench", "compare", cpu, str(paths["older"]), "--out", str(tmp_path / "older")])
        == 0
    )
    assert differences(here | {"config": here["config"] | {"cnn_form": "native"}}, older) == [
        "config.cnn_form: native against im2col"
    ]

    with pytest.raises(ConfigError, match=r"settings\.epochs: 1 against 3"):
        compare([cpu, str(paths["other"])], str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    assert (
        main(["bench", "compare", cpu, str(paths["other"]), "--out", str(tmp_path / "refused")])
        == 2
    )
    allowed = compare([cpu, str(paths["other"])], str(tmp_path / "allowed"), allow_mismatch=True)
    assert (
        "- config.batch_size: 256 against 128" in allowed
        and "- settings.epochs: 1 against 3" in allowed
    )
    # Two results of one machine: each name gains its file.
    twice = compare([gpu, str(paths["other"])], str(tmp_path / "twice"), allow_mismatch=True)
    assert (
        f"| 1 x NVIDIA H200 ({gpu}) | gpu |" in twice
        and f"| 1 x NVIDIA H200 ({paths['other']}) | gpu |" in twice
    )


def test_the_machine_fingerprint(monkeypatch):
    import jax.extend.backend

    from mnist_jax.runtime.environment import fingerprint

    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    got = fingerprint()
    assert got["cpu"]["cores"] == os.cpu_count()
    if Path("/proc/cpuinfo").exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        assert got["cpu"]["model"] == models[0]
    assert [(a["platform"], a["kind"]) for a in got["accelerators"]] == [
        (d.platform, d.device_kind) for d in jax.devices() if d.platform != "cpu"
    ]
    # Keyed by JAX's backend names ("cpu", "cuda", ...), each with the version its runtime reports.
    assert set(got["platform_versions"]) == set(jax.extend.backend.backends())
    assert all(isinstance(v, str) and v for v in got["platform_versions"].values())
    assert got["versions"]["jax"] == jax.__version__
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=60
        ).stdout.strip()
        assert got["git_commit"] == head
    assert got["xla_flags"] == "--xla_cpu_enable_fast_math=false"
    age = datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(got["date"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)


def test_the_device_check_keeps_to_its_budget_and_records_each_step(tmp_path, idx_dir):
    from benchmarks import device_check

    out = tmp_path / "check"
    status = device_check.main(
        ["--idx-dir", idx_dir, "--out", str(out), "--steps", "seed", "cnn", "--budget", "0.5"]
    )
    summary = json.loads((out / "summary.json").read_text())
    # in order, the chosen ones only
    assert status == 1 and list(summary["steps"]) == ["seed", "cnn"]
    assert all(
        step["status"] == "timed out" and step["seconds"] < 30
        for step in summary["steps"].values()
    )
    assert summary["steps"]["cnn"]["command"][-5:] == [
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(out / "cnn"),
    ]
    assert summary["fingerprint"]["cpu"]["cores"] > 0 and (out / "seed.log").exists()
