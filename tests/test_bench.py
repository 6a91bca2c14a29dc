"""The benchmark (`mnist-jax bench`, `bench compare`) on tiny data, and the machine fingerprint."""

import copy
import dataclasses
import datetime
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from mnist_jax import Config, ConfigError, preset, train
from mnist_jax.bench import references
from mnist_jax.bench.compare import compare, differences, result_names
from mnist_jax.bench.measure import (
    FIRST_GEMM_SIZE,
    MAX_GEMM_SIZE,
    MIN_GEMM_SECONDS,
    bench_configs,
    cnn_flops_per_epoch,
    larger_gemm,
    matmul_flops_per_epoch,
    scaled_widths,
    sized_gemm,
    time_to_accuracy,
)
from mnist_jax.bench.render import (
    AUTOGRAD,
    CNN_ROW,
    SPEEDRUN_ROW,
    USER_CNN_ROW,
    markdown,
    read_results,
    summary_line,
    torch_row,
)
from mnist_jax.bench.settings import QUICK_BENCH, BenchSettings
from mnist_jax.cli import main
from mnist_jax.config import DTYPES
from mnist_jax.records import EpochMetrics
from tests.helpers import NUM_TRAIN, ROOT, png_size

# The committed full and quick results as the bench wrote them before it had a dtype, PyTorch on
# CUDA and targets (copies of benchmarks/results at commit 16e722a): what `compare` and the
# tables must still read.
OLDER = {
    "full": ROOT / "tests" / "data" / "bench-results-before-dtype.json",
    "quick": ROOT / "tests" / "data" / "bench-quick-results-before-dtype.json",
}


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


@pytest.mark.parametrize(
    "size, count, seconds, following",
    [
        (2048, 1, 0.2, None),  # long enough as it is
        (2048, 1, MIN_GEMM_SECONDS, None),
        (2048, 1, 0.001, (4096, 1)),  # too short: twice the size first
        (12288, 1, 0.001, (MAX_GEMM_SIZE, 1)),  # no larger than the largest
        (MAX_GEMM_SIZE, 1, 0.011, (MAX_GEMM_SIZE, 5)),  # then more calls: 5 x 11 ms >= 50 ms
        (MAX_GEMM_SIZE, 3, 0.049, (MAX_GEMM_SIZE, 6)),  # always at least twice as many
        (MAX_GEMM_SIZE, 1, 0.001, (MAX_GEMM_SIZE, 16)),  # at most 16 times as many at once
        (MAX_GEMM_SIZE, 2, 0.0, (MAX_GEMM_SIZE, 32)),  # a clock that read nothing
    ],
)
def test_the_gemm_grows_its_size_then_its_calls_until_it_takes_long_enough(
    size, count, seconds, following
):
    assert larger_gemm(size, count, seconds) == following


@pytest.mark.parametrize(
    "rate, launch, size, count",
    [
        (133e9, 20e-6, FIRST_GEMM_SIZE, 1),  # this machine's 2 cores: 2048 takes 0.13 s
        (2e12, 20e-6, 4096, 1),  # a large CPU: 2048 takes 8.6 ms, 4096 69 ms
        (60e12, 10e-6, MAX_GEMM_SIZE, 1),  # an H100 in float32: 16384 takes 0.15 s
        (800e12, 10e-6, MAX_GEMM_SIZE, 5),  # an H100 in bfloat16: 16384 takes 11 ms
    ],
)
def test_the_floor_is_measured_on_work_long_enough_for_the_device(rate, launch, size, count):
    # A simulated device: each call costs its launch and its FLOPs at `rate`.
    def seconds(n, calls):
        return calls * (launch + 2 * n**3 / rate)

    measured = sized_gemm(seconds)
    assert (measured["size"], measured["count"]) == (size, count)
    assert measured["seconds"] == seconds(size, count) >= MIN_GEMM_SECONDS
    assert measured["gflops"] == pytest.approx(2 * size**3 * count / measured["seconds"] / 1e9)
    # The launches are under 1% of the time (ten 2048-square matmuls, the old floor, spent a
    # third of it launching on the H100 in bfloat16).
    assert measured["gflops"] == pytest.approx(rate / 1e9, rel=0.01)


@pytest.mark.parametrize("cuda_available, device", [(True, "cuda"), (False, "cpu")])
def test_pytorch_runs_on_cuda_where_it_sees_a_gpu(cuda_available, device):
    assert references.torch_device(cuda_available) == device


def test_the_time_to_a_target_accuracy_sums_the_epochs_until_it():
    def epoch(number, accuracy, seconds):
        return EpochMetrics(number, accuracy, accuracy, 0.1, 0.1, seconds, None, 0.5)

    history = [epoch(0, 0.1, None), epoch(1, 0.95, 1.0), epoch(2, 0.975, 1.5), epoch(3, 0.99, 2)]
    assert time_to_accuracy(history, 0.97) == 2.5
    assert time_to_accuracy(history, 0.99) == 4.5
    assert time_to_accuracy(history, 0.995) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_trained_config_takes_the_benchs_dtype_and_precision(dtype):
    settings = dataclasses.replace(QUICK_BENCH, dtype=dtype, matmul_precision="high", epochs=2)
    configs = bench_configs(settings, "data")
    assert {c.dtype for c in configs.values()} == {dtype}
    assert {c.matmul_precision for c in configs.values()} == {"high"}
    numerics = {"dtype": dtype, "matmul_precision": "high", "data_dir": "data"}
    assert configs["mlp"] == Config(layer_sizes=settings.layer_sizes, num_epochs=2, **numerics)
    assert configs["cnn"] == preset("cnn").replace(num_epochs=settings.cnn_epochs, **numerics)
    assert configs["speedrun"] == preset("speedrun").replace(**numerics)


def test_the_bench_dtype_is_one_of_configs():
    assert BenchSettings(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"bench dtype must be one of float32, .*'float16'"):
        BenchSettings(dtype="float16")


def table_rows(text: str, cells: int, key=(0, 1)) -> dict[tuple[str, ...], list[str]]:
    """The rows of `cells` cells of the Markdown tables in `text` (their headers included), keyed
    by the cells at `key`."""
    return {
        tuple(row[i] for i in key): row
        for line in text.splitlines()
        if line.startswith("| ")
        and line.endswith(" |")
        and len(row := line[2:-2].split(" | ")) == cells
        and row[0] != "---"
    }


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
    assert (saved["fingerprint"]["dtype"], saved["fingerprint"]["matmul_precision"]) == (
        "float32",
        "highest",
    )
    cpu = saved["platforms"]["cpu"]
    assert set(cpu["pipelines"]) == {
        "stream",
        "device",
        "device float64 (seed preset)",
        CNN_ROW,
        USER_CNN_ROW,
        SPEEDRUN_ROW,
    }
    # Every trained row: its examples/s from its epochs, timed to 99% (the speedrun) or 97%.
    for name, timing in cpu["pipelines"].items():
        assert timing["examples_per_second"] == pytest.approx(
            NUM_TRAIN / timing["seconds_per_epoch"]["median"]
        )
        assert timing["target_accuracy"] == (0.99 if name == SPEEDRUN_ROW else 0.97)
        assert (timing["time_to_target"] is None) == (timing["runs_reaching_target"] == 0)
    # The speedrun preset as it is: its one epoch per run, its floor from its FLOPs.
    assert saved["speedrun_config"] == preset("speedrun").replace(data_dir=data_dir).to_dict()
    assert cpu["pipelines"][SPEEDRUN_ROW]["seconds_per_epoch"]["n"] == 1
    assert saved["speedrun_gflop_per_epoch"] == pytest.approx(
        cnn_flops_per_epoch(preset("speedrun"), NUM_TRAIN) / 1e9
    )
    # The CNN's row: the cnn preset for one epoch, its floor from the CNN's FLOPs, PyTorch's CNN
    # beside it.
    assert saved["cnn_config"] == preset("cnn").replace(num_epochs=1, data_dir=data_dir).to_dict()
    assert cpu["pipelines"][CNN_ROW]["seconds_per_epoch"]["n"] == 1
    assert 0 <= cpu["pipelines"][CNN_ROW]["final_test_accuracy"]["median"] <= 1
    # The large-GEMM rate in the run's dtype and in bfloat16, each from the matmuls it timed.
    assert list(cpu["gemm"]) == ["float32", "bfloat16"]
    for gemm in cpu["gemm"].values():
        assert FIRST_GEMM_SIZE <= gemm["size"] <= MAX_GEMM_SIZE and gemm["count"] >= 1
        assert gemm["gflops"] == pytest.approx(
            2 * gemm["size"] ** 3 * gemm["count"] / gemm["seconds"] / 1e9
        )
    assert cpu["gemm_gflops"] == cpu["gemm"]["float32"]["gflops"]
    assert cpu["cnn_floor_seconds_per_epoch"] == pytest.approx(
        cnn_flops_per_epoch(preset("cnn"), NUM_TRAIN) / cpu["gemm_gflops"] / 1e9
    )
    # The references: PyTorch where torch sees a GPU on CUDA, the examples/s of each.
    torch_rows = (torch_row("float32"), torch_row("float32", cnn=True))
    if importlib.util.find_spec("torch") is None:  # the test extra has autograd, not torch
        assert all("skipped" in saved["references"][name] for name in torch_rows)
        ran = {AUTOGRAD: "cpu"}
    else:
        ran = {AUTOGRAD: "cpu"} | dict.fromkeys(torch_rows, references.torch_device_here())
    for name, on in ran.items():
        timing = saved["references"][name]
        assert timing["device"] == on
        assert timing["examples_per_second"] == pytest.approx(
            NUM_TRAIN / timing["seconds_per_epoch"]["median"]
        )
    # The same network written by a user, through --model: its convolutions rewritten on a CPU.
    user = cpu["pipelines"][USER_CNN_ROW]
    assert user["seconds_per_epoch"]["n"] == 1 and 0 <= user["final_test_accuracy"]["median"] <= 1
    assert user["convolutions"] == {"im2col": 1, "winograd": 1}
    assert "convolutions" not in cpu["pipelines"][CNN_ROW]
    for name, timing in cpu["pipelines"].items():
        if name in (CNN_ROW, USER_CNN_ROW, SPEEDRUN_ROW):
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
    assert (
        "| platform | implementation (float32 unless named; matmul precision highest) | "
        "s/epoch median [min, max] | examples/s | compile s | s to target test accuracy | "
        "final test % | vs PyTorch | vs float32 floor | vs bfloat16 floor |"
    ) in table.splitlines()
    rows = table_rows(table, 10)
    for name, timing in cpu["pipelines"].items():
        cells = rows[("cpu", f"mnist_jax {name}")]
        target, reached = timing["target_accuracy"], timing["time_to_target"]
        assert cells[3] == f"{timing['examples_per_second']:,.0f}"
        assert cells[5] == (f"{reached['median']:.2f}" if reached else "not reached") + (
            f" ({100 * target:.0f}%)"
        )
        model = "speedrun" if name == SPEEDRUN_ROW else "cnn" if "cnn" in name else "mlp"
        gflop = {
            "mlp": saved["matmul_gflop_per_epoch"],
            "cnn": saved["cnn_gflop_per_epoch"],
            "speedrun": saved["speedrun_gflop_per_epoch"],
        }[model]
        assert cells[-2:] == [
            f"{timing['seconds_per_epoch']['median'] * cpu['gemm'][dtype]['gflops'] / gflop:.2f}"
            for dtype in ("float32", "bfloat16")
        ]
    for name, on in ran.items():  # each reference on the platform of its device, named
        assert rows[({"cuda": "gpu", "cpu": "cpu"}[on], f"{name} on {on}")]
    torch = saved["references"][torch_row("float32")].get("seconds_per_epoch", {}).get("median")
    device = cpu["pipelines"]["device"]["seconds_per_epoch"]["median"]
    vs_torch = rows[("cpu", "mnist_jax device")][-3]
    assert vs_torch == (f"{device / torch:.2f}" if torch else "n/a")
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
    for timing in here["references"].values():
        timing.update({"device": "cpu"} if "device" in timing else {})
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
        for name in (torch_row("float32"), torch_row("float32", cnn=True))
    )
    # each platform's rows, autograd, PyTorch's where timed; each in the run's dtype and precision
    assert len(rows) == 2 * len(here["platforms"]["cpu"]["pipelines"]) + 1 + timed_references
    # (the seed preset and the notebook's code in float64, as their names say)
    assert all(
        row[3] == f"{'float64' if 'float64' in row[2] else 'float32'}, highest" for row in rows
    )
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
        f"config.cnn_form: native against {Config().cnn_form}"
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


def test_the_tables_name_their_dtype_and_precision_and_pytorchs_device(quick_bench, tmp_path):
    out, _ = quick_bench
    saved = json.loads((out / "results.json").read_text())
    # The quick result as if run in bfloat16 at precision high, PyTorch's MLP on CUDA.
    results = copy.deepcopy(saved)
    results["settings"] |= {"dtype": "bfloat16", "matmul_precision": "high"}
    cpu = results["platforms"]["cpu"]
    cpu["gemm"] = {"bfloat16": cpu["gemm"]["bfloat16"]}
    torch = {"median": 0.5, "min": 0.4, "max": 0.625, "n": 2}
    results["references"] = {
        torch_row("bfloat16"): {
            "device": "cuda",
            "seconds_per_epoch": torch,
            "examples_per_second": 600.0,
        },
        AUTOGRAD: saved["references"][AUTOGRAD],
        torch_row("bfloat16", cnn=True): {"skipped": "torch is not installed"},
    }
    table = markdown(results)
    assert (
        "| platform | implementation (bfloat16 unless named; matmul precision high) | "
        "s/epoch median [min, max] | examples/s | compile s | s to target test accuracy | "
        "final test % | vs PyTorch | vs bfloat16 floor |"
    ) in table.splitlines()
    assert (
        "| sweep | value | s/epoch (device pipeline; bfloat16, matmul precision high) |" in table
    )
    assert "| pipeline | devices | s/epoch (bfloat16, matmul precision high) |" in table
    gemm = cpu["gemm"]["bfloat16"]
    assert (
        f"large-GEMM rate {gemm['gflops']:.0f} GFLOP/s in bfloat16 ({gemm['count']} x "
        f"{gemm['size']}-square matmuls in {gemm['seconds']:.3f} s), at matmul precision high"
    ) in table
    rows = table_rows(table, 9)
    assert rows[("gpu", "pytorch bfloat16 on cuda")][2:5] == ["0.500 [0.400, 0.625]", "600", ""]
    device = cpu["pipelines"]["device"]["seconds_per_epoch"]["median"]
    assert rows[("cpu", "mnist_jax device")][-2] == f"{device / 0.5:.2f}"
    assert rows[("cpu", f"mnist_jax {CNN_ROW}")][-2] == "n/a"  # PyTorch's CNN was not timed
    assert (
        rows[("cpu", "pytorch bfloat16 cnn")][2:] == ["skipped: torch is not installed"] + [""] * 6
    )
    assert "PyTorch's 0.500 s on cuda" in summary_line(results)
    # bench compare: PyTorch's row on the GPU, every row in bfloat16 at precision high.
    path = tmp_path / "bf16.json"
    path.write_text(json.dumps(results))
    text = compare([str(path)], str(tmp_path / "cmp"))
    compared = table_rows(text, 10, key=(1, 2))
    del compared[("platform", "implementation")]
    assert all(
        row[3] == f"{'float64' if 'float64' in row[2] else 'bfloat16'}, high"
        for row in compared.values()
    )
    assert sum(row[3] == "float64, high" for row in compared.values()) == 2
    assert ("gpu", "pytorch bfloat16") in compared
    assert differences(saved, results) == [
        "settings.dtype: float32 against bfloat16",
        "settings.matmul_precision: highest against high",
    ]


@pytest.mark.parametrize("which", ["full", "quick"])
def test_older_results_render_with_the_figures_they_lack_absent(which):
    results = read_results(str(OLDER[which]))
    cpu = results["platforms"]["cpu"]
    table = markdown(results)
    assert "implementation (float32 unless named; matmul precision highest)" in table
    rows = table_rows(table, 10)
    del rows[("platform", "implementation (float32 unless named; matmul precision highest)")]
    rows = {key: row[2:] for key, row in rows.items()}
    # Every row, the references under today's names, on the CPU where they ran.
    references = ("pytorch float32", AUTOGRAD, "pytorch float32 cnn")
    assert set(rows) == {("cpu", f"mnist_jax {name}") for name in cpu["pipelines"]} | {
        ("cpu", f"{name} on cpu") for name in references
    }
    timings = {f"mnist_jax {name}": t for name, t in cpu["pipelines"].items()} | {
        f"{new} on cpu": results["references"][old]
        for new, old in zip(
            references, ("pytorch-cpu float32", AUTOGRAD, "pytorch-cpu float32 cnn"), strict=True
        )
    }
    for (_, name), cells in rows.items():
        seconds = timings[name]["seconds_per_epoch"]["median"]
        floor = cpu["cnn_floor_seconds_per_epoch" if "cnn" in name else "floor_seconds_per_epoch"]
        assert cells[-2:] == [f"{seconds / floor:.2f}", "—"]  # no bfloat16 floor then
        if name.startswith("mnist_jax"):
            reached = timings[name]["time_to_97"]
            assert cells[3] == (f"{reached['median']:.2f}" if reached else "not reached") + (
                " (97%)"
            )
        else:
            assert cells[1] == "—"  # the references' examples/s were not recorded then


def test_compare_sets_new_results_beside_older_ones(quick_bench, tmp_path):
    out, _ = quick_bench
    old, new = str(OLDER["quick"]), str(out / "results.json")
    older, newer = read_results(old), read_results(new)
    text = compare([old, new], str(tmp_path / "cmp"), allow_mismatch=True)
    # The dtype, a setting since, counts at its default (float32) in the older result.
    assert "settings.dtype" not in text and "- settings.layer_sizes" in text
    names = result_names({old: older, new: newer})
    by_result = table_rows(text, 10, key=(0, 2))
    device = by_result[(names[old], "mnist_jax device")]
    reached = older["platforms"]["cpu"]["pipelines"]["device"]["time_to_97"]
    assert device[3] == "float32, highest"
    assert device[7] == (f"{reached['median']:.2f}" if reached else "not reached") + " (97%)"
    torch = by_result[(names[old], "pytorch float32")]
    assert torch[1] == "cpu" and torch[5] == "—" and torch[7] == "—"  # nor examples/s then
    # The new rows' ratios to the older ones, PyTorch's under its new name included.
    timing = newer["references"][torch_row("float32")]
    if "seconds_per_epoch" in timing:  # torch is installed here
        ratio = (
            timing["seconds_per_epoch"]["median"]
            / (older["references"]["pytorch-cpu float32"]["seconds_per_epoch"]["median"])
        )
        assert by_result[(names[new], "pytorch float32")][-1] == f"{ratio:.2f}"
    assert by_result[(names[new], f"mnist_jax {SPEEDRUN_ROW}")][-1] == "—"  # none before
    both = [str(OLDER["full"]), old, "--allow-mismatch", "--out", str(tmp_path / "old")]
    assert main(["bench", "compare", *both]) == 0


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
