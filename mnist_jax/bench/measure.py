"""The benchmark's measurements (`mnist-jax bench`): for every platform JAX sees, both data
paths, the seed preset, the `cnn` preset and its network as a user writes it
(`mnist_jax.bench.user_cnn`), and the `speedrun` preset, each trained in full (compile time,
seconds per epoch, examples/s, time to the row's target test accuracy), batch-size and width
sweeps, a vmapped seed sweep against the seeds one by one, device-count scaling, the large-GEMM
rate in the run's dtype and in bfloat16 (the models' FLOP floors), and the references (the seed
notebook's autograd code, the same MLP and the same CNN in PyTorch, on CUDA where torch sees a
GPU) where the `bench` extra is installed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mnist_jax import data
from mnist_jax.bench import references, user_cnn
from mnist_jax.bench.render import (
    AUTOGRAD,
    CNN_ROW,
    FLOOR_DTYPE,
    SEED_PRESET,
    SPEEDRUN_ROW,
    USER_CNN_ROW,
    target_accuracy,
    torch_row,
)
from mnist_jax.bench.settings import FULL_BENCH, BenchSettings
from mnist_jax.config import Config, cnn_conv_sides, cnn_feature_side, preset
from mnist_jax.pipelines import PIPELINES, make_pipeline
from mnist_jax.records import EpochMetrics
from mnist_jax.runtime import parallel
from mnist_jax.runtime.environment import fingerprint
from mnist_jax.steps import make_steps, precision
from mnist_jax.sweep import sweep
from mnist_jax.training import train

# The least time of one timed GEMM workload: tens of milliseconds, so that launching the calls
# is a small part of it, on a CPU and on the fastest accelerator alike.
MIN_GEMM_SECONDS = 0.05
FIRST_GEMM_SIZE = 2048
MAX_GEMM_SIZE = 16384  # a 1 GiB float32 matrix


def describe(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def matmul_flops_per_epoch(sizes, num_examples: int) -> float:
    """Forward and backward matmul FLOPs of one epoch (no input gradient for the first layer)."""
    mn = [m * n for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * num_examples * (2 * sum(mn) + sum(mn[1:]))


def cnn_flops_per_epoch(config: Config, num_examples: int) -> float:
    """Forward and backward FLOPs of one epoch of the configurable CNN's convolutions and dense
    layers (no input gradient for the first layer), counted as multiply-adds of each."""
    channels, side = (1, *config.cnn_channels), cnn_feature_side(config)
    macs = [
        conv_side * conv_side * kernel * kernel * inputs * out
        for conv_side, kernel, inputs, out in zip(
            cnn_conv_sides(config), config.cnn_kernels, channels[:-1], channels[1:], strict=True
        )
    ]
    macs += [side * side * channels[-1] * config.cnn_dense, config.cnn_dense * 10]
    return 2 * num_examples * (2 * sum(macs) + sum(macs[1:]))


def scaled_widths(sizes: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """The layer sizes with every hidden width times `scale`."""
    return (sizes[0], *(max(1, round(n * scale)) for n in sizes[1:-1]), sizes[-1])


def larger_gemm(
    size: int,
    count: int,
    seconds: float,
    min_seconds: float = MIN_GEMM_SECONDS,
    max_size: int = MAX_GEMM_SIZE,
) -> tuple[int, int] | None:
    """The next GEMM workload (size, count) to time after `count` back-to-back size x size matmuls
    took `seconds`: None once they took `min_seconds`; before that, twice the size (up to
    `max_size`), then as many times the calls as `min_seconds` needs, at most 16 times as many
    in one step (a clock that read no time at all says nothing of how many more)."""
    if seconds >= min_seconds:
        return None
    if size < max_size:
        return min(2 * size, max_size), count
    return size, count * (min(16, math.ceil(min_seconds / seconds)) if seconds > 0 else 16)


_square = jax.jit(lambda x: x @ x)


def time_gemm(size: int, count: int, dtype: str) -> float:
    """Seconds of `count` back-to-back size x size matmuls in `dtype` on the default device (the
    compilation and a first call excluded)."""
    a = jnp.ones((size, size), dtype)
    _square(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(count):
        out = _square(a)
    out.block_until_ready()
    return time.perf_counter() - start


def sized_gemm(time_it: Callable[[int, int], float], timings: int = 3) -> dict:
    """The large-GEMM rate that `time_it(size, count)` (the seconds of `count` back-to-back
    size x size matmuls) measures: from `FIRST_GEMM_SIZE`, the workload grown by `larger_gemm`
    until it takes `MIN_GEMM_SECONDS`, then the fastest of `timings` timings of it."""
    size, count = FIRST_GEMM_SIZE, 1
    seconds = time_it(size, count)
    while (larger := larger_gemm(size, count, seconds)) is not None:
        size, count = larger
        seconds = time_it(size, count)
    seconds = min([seconds] + [time_it(size, count) for _ in range(timings - 1)])
    return {
        "gflops": 2 * size**3 * count / seconds / 1e9,
        "size": size,
        "count": count,
        "seconds": seconds,
    }


def gemm_rate(device, config: Config, dtype: str) -> dict:
    """The device's large-GEMM rate in `dtype` at the config's matmul precision (`sized_gemm`)."""
    with jax.default_device(device), precision(config.replace(dtype=dtype)):
        return sized_gemm(lambda size, count: time_gemm(size, count, dtype))


def time_to_accuracy(history: list[EpochMetrics], target: float) -> float | None:
    """Training seconds until the test accuracy first reaches `target`."""
    elapsed = 0.0
    for m in history[1:]:
        elapsed += m.epoch_seconds
        if m.test_accuracy >= target:
            return elapsed
    return None


def bench_training(
    config: Config, warmup: int, repeats: int, num_train: int, target: float
) -> dict:
    """Whole training runs: seconds per epoch, examples/s, compile time, time to the `target` test
    accuracy, final accuracy."""
    runs = [train(config) for _ in range(warmup + repeats)][warmup:]
    epoch_seconds = [m.epoch_seconds for r in runs for m in r.history[1:]]
    reached = [t for r in runs if (t := time_to_accuracy(r.history, target)) is not None]
    return {
        "seconds_per_epoch": describe(epoch_seconds),
        "examples_per_second": num_train / statistics.median(epoch_seconds),
        "compile_seconds": describe([r.compile_seconds for r in runs]),
        "target_accuracy": target,
        "time_to_target": describe(reached) if reached else None,
        "runs_reaching_target": len(reached),
        "final_test_accuracy": describe([r.final_test_accuracy for r in runs]),
        **({"convolutions": runs[0].convolutions} if runs[0].convolutions else {}),
    }


def time_epochs(
    config: Config, shares: dict, mesh, pipeline: str, epochs: int, warmup: int = 1
) -> float:
    """Median seconds per epoch over `epochs` timed epochs after `warmup` discarded ones."""
    config = config.replace(num_epochs=warmup + epochs, pipeline=pipeline)
    steps = make_steps(config)
    state = parallel.replicate(steps.init(config.seed), mesh)
    runner = make_pipeline(config, steps, shares, state, mesh)
    seconds = []
    for epoch in range(1, warmup + epochs + 1):
        start = time.perf_counter()
        state = runner.train_epoch(state, epoch, lambda done: None).state
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[warmup:])


def setting_sweep(
    config: Config,
    shares: dict,
    field: str,
    values: tuple,
    changes: list[dict],
    epochs: int,
    warmup: int,
) -> list[dict]:
    """Seconds per epoch (and matmul GFLOP/s) of the device pipeline on one device as a setting
    varies."""
    rows = []
    for value, change in zip(values, changes, strict=True):
        varied = config.replace(**change)
        seconds = time_epochs(
            varied, shares, parallel.make_mesh(1, varied.platform), "device", epochs, warmup
        )
        flops = matmul_flops_per_epoch(varied.layer_sizes, shares["train"].total)
        rows.append(
            {field: value, **change, "seconds_per_epoch": seconds, "gflops": flops / seconds / 1e9}
        )
    return rows


def scaling(
    config: Config, shares: dict, counts: tuple[int, ...], epochs: int, warmup: int
) -> list[dict]:
    """Seconds per epoch for each pipeline and device count."""
    return [
        {
            "pipeline": pipeline,
            "devices": n,
            "seconds_per_epoch": time_epochs(
                config, shares, parallel.make_mesh(n, config.platform), pipeline, epochs, warmup
            ),
        }
        for pipeline in PIPELINES
        for n in counts
    ]


def device_scaling(
    config: Config, shares: dict, counts: tuple[int, ...], epochs: int, warmup: int
) -> dict:
    """Both pipelines on 1..N devices; CPU devices are simulated in a subprocess."""
    if config.platform != "cpu":
        available = len(jax.devices(config.platform))
        return {
            "simulated": False,
            "rows": scaling(
                config, shares, tuple(n for n in counts if n <= available), epochs, warmup
            ),
        }
    env = parallel.simulated_cpu_env(max(counts))
    job = {"config": config.to_dict(), "counts": list(counts), "epochs": epochs, "warmup": warmup}
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_jax.bench.measure", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return {
        "simulated": True,
        "rows": json.loads(proc.stdout.strip().splitlines()[-1]),
        "note": (
            "simulated CPU devices share this machine's cores: this measures overhead, not speedup"
        ),
    }


def seed_sweep(config: Config, num_seeds: int) -> dict:
    """A vmapped seed sweep against the same seeds trained one after another (training and
    evaluation seconds in both; loading data and compiling excluded)."""
    seeds = [config.seed + i for i in range(num_seeds)]
    swept = sweep(config, seeds)
    one_by_one = [train(config.replace(seed=seed)) for seed in seeds]
    sequential = sum(
        m.eval_seconds + (m.epoch_seconds or 0) for r in one_by_one for m in r.history
    )
    return {
        "seeds": num_seeds,
        "sweep_seconds": swept.seconds,
        "sequential_seconds": sequential,
        "speedup": sequential / swept.seconds,
    }


def bench_references(
    images, labels, epochs: int, cnn_epochs: int, cnn: Config, dtype: str, matmul_precision: str
) -> dict:
    """Seconds per epoch and examples/s of the references, and the device each ran on; a row that
    says why where one is not installed. PyTorch's run in `dtype` at `matmul_precision`, its
    first epoch discarded (it warms up)."""
    numerics = {"dtype": dtype, "matmul_precision": matmul_precision}
    results = {}
    for name, time_it, on_torch, discarded in (
        (
            torch_row(dtype),
            lambda device: references.torch_epoch_seconds(
                images, labels, epochs + 1, device=device, **numerics
            ),
            True,
            1,
        ),
        (
            AUTOGRAD,
            lambda device: references.autograd_epoch_seconds(images, labels, epochs),
            False,
            0,
        ),
        (
            torch_row(dtype, cnn=True),
            lambda device: references.torch_cnn_epoch_seconds(
                images, labels, cnn_epochs + 1, cnn, device=device, **numerics
            ),
            True,
            1,
        ),
    ):
        try:
            device = references.torch_device_here() if on_torch else "cpu"
            seconds = describe(time_it(device)[discarded:])
        except ImportError as e:
            results[name] = {
                "skipped": f"{e.name} is not installed (pip install 'mnist-jax[bench]')"
            }
            continue
        results[name] = {
            "device": device,
            "seconds_per_epoch": seconds,
            "examples_per_second": len(labels) / seconds["median"],
        }
    return results


def bench_configs(settings: BenchSettings, data_dir: str | None = None) -> dict[str, Config]:
    """The configs a benchmark trains, by `row_model`: the MLP of `settings`, the `cnn` preset for
    `settings.cnn_epochs`, and the `speedrun` preset as it is (its epochs and schedule, for its
    time to 99%); every one in the settings' dtype and matmul precision."""
    numerics = {"matmul_precision": settings.matmul_precision, "dtype": settings.dtype}
    return {
        "mlp": Config(
            layer_sizes=settings.layer_sizes,
            num_epochs=settings.epochs,
            data_dir=data_dir,
            **numerics,
        ),
        "cnn": preset("cnn").replace(
            num_epochs=settings.cnn_epochs, data_dir=data_dir, **numerics
        ),
        "speedrun": preset("speedrun").replace(data_dir=data_dir, **numerics),
    }


def run_benchmark(
    settings: BenchSettings = FULL_BENCH,
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Every measurement, on every platform JAX sees, as the dict `results.json` holds."""
    start = time.perf_counter()

    def step(what: str) -> None:
        log(f"[{time.perf_counter() - start:6.1f} s] {what}")

    sizes = settings.layer_sizes
    configs = bench_configs(settings, data_dir)
    config, cnn, speedrun = configs["mlp"], configs["cnn"], configs["speedrun"]
    shares = data.load(data_dir)
    num_train = shares["train"].total
    flops = matmul_flops_per_epoch(sizes, num_train)
    cnn_flops = cnn_flops_per_epoch(cnn, num_train)
    results = {
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "fingerprint": {
            **fingerprint(),
            "matmul_precision": settings.matmul_precision,
            "dtype": settings.dtype,
        },
        "matmul_gflop_per_epoch": flops / 1e9,
        "cnn_config": cnn.to_dict(),
        "cnn_gflop_per_epoch": cnn_flops / 1e9,
        "speedrun_config": speedrun.to_dict(),
        "speedrun_gflop_per_epoch": cnn_flops_per_epoch(speedrun, num_train) / 1e9,
        "platforms": {},
    }
    for device in (jax.devices(p)[0] for p in dict.fromkeys(["cpu", jax.default_backend()])):
        config = config.replace(platform=device.platform, devices=1)
        gemm = {}
        for dtype in dict.fromkeys([settings.dtype, FLOOR_DTYPE]):
            step(f"{device.platform}: the large-GEMM rate in {dtype}")
            gemm[dtype] = gemm_rate(device, config, dtype)
        rate = gemm[settings.dtype]["gflops"]
        entry = {
            "device": f"{device.platform}:{device.device_kind}",
            "gemm": gemm,
            "gemm_gflops": rate,
            "floor_seconds_per_epoch": flops / rate / 1e9,
            "cnn_floor_seconds_per_epoch": cnn_flops / rate / 1e9,
            "pipelines": {},
        }
        epochs = f"{settings.epochs} epoch{'s' if settings.epochs > 1 else ''}"
        runs = f"{settings.warmup} + {settings.repeats} runs of {epochs}"
        cnn_runs = (
            f"{settings.cnn_repeats} runs of {settings.cnn_epochs} "
            f"epoch{'s' if settings.cnn_epochs > 1 else ''}"
        )
        on_one = {"platform": device.platform, "devices": 1}
        # (row, config, warm-up runs, timed runs, what the log says); the CNNs are compiled ahead
        # of time, so they need no warm-up run.
        rows = [
            (p, config.replace(pipeline=p), settings.warmup, settings.repeats, runs)
            for p in PIPELINES
        ]
        rows += [
            (
                SEED_PRESET,
                config.replace(dtype="float64", init="numpy", shuffle=False),
                settings.warmup,
                settings.repeats,
                runs,
            ),
            (CNN_ROW, cnn.replace(**on_one), 0, settings.cnn_repeats, cnn_runs),
            (
                USER_CNN_ROW,
                cnn.replace(model=user_cnn.IMPORT_PATH, **on_one),
                0,
                settings.cnn_repeats,
                cnn_runs,
            ),
            (
                SPEEDRUN_ROW,
                speedrun.replace(**on_one),
                0,
                settings.cnn_repeats,
                f"{settings.cnn_repeats} runs of the preset",
            ),
        ]
        for name, varied, warmup, repeats, what in rows:
            step(f"{device.platform}: {name}, {what}")
            entry["pipelines"][name] = bench_training(
                varied, warmup, repeats, num_train, target_accuracy(name)
            )
        step(f"{device.platform}: batch-size and width sweeps")
        entry["sweeps"] = {
            "batch_size": setting_sweep(
                config,
                shares,
                "batch_size",
                settings.batch_sizes,
                [{"batch_size": b} for b in settings.batch_sizes],
                settings.timed_epochs,
                settings.warmup,
            ),
            "width_scale": setting_sweep(
                config,
                shares,
                "width_scale",
                settings.width_scales,
                [{"layer_sizes": scaled_widths(sizes, x)} for x in settings.width_scales],
                settings.timed_epochs,
                settings.warmup,
            ),
        }
        step(f"{device.platform}: {settings.sweep_seeds} seeds vmapped against one by one")
        entry["seed_sweep"] = seed_sweep(config.replace(pipeline="device"), settings.sweep_seeds)
        step(f"{device.platform}: device counts {', '.join(map(str, settings.device_counts))}")
        entry["device_scaling"] = device_scaling(
            config, shares, settings.device_counts, settings.timed_epochs, settings.warmup
        )
        results["platforms"][device.platform] = entry
    step("references: PyTorch's MLP and CNN, and the seed notebook's autograd code")
    results["references"] = bench_references(
        *shares["train"].in_file_order("train"),
        settings.reference_epochs,
        settings.cnn_epochs,
        cnn,
        settings.dtype,
        settings.matmul_precision,
    )
    results["seconds"] = time.perf_counter() - start
    step("done")
    return results


def _scaling_worker(job: dict) -> None:
    """Runs in a fresh process that sees the simulated devices; prints the rows as JSON."""
    config = Config.from_dict(job["config"])
    shares = data.load(config.data_dir)
    print(json.dumps(scaling(config, shares, tuple(job["counts"]), job["epochs"], job["warmup"])))


if __name__ == "__main__":
    _scaling_worker(json.loads(sys.argv[1]))
