"""The benchmark's measurements (`mnist-jax bench`): for every platform JAX sees, both data
paths, the seed preset, the `cnn` preset and its network as a user writes it
(`mnist_jax.bench.user_cnn`), each trained in full (compile time, seconds per epoch,
examples/s, time to 97% test accuracy), batch-size and width sweeps, a vmapped seed sweep against
the seeds one by one, device-count scaling, the large-GEMM rate (the MLP's and the CNN's FLOP
floors), and the references (the seed notebook's autograd code, the same MLP and the same CNN in
PyTorch) where the `bench` extra is installed.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mnist_jax import data
from mnist_jax.bench import references, user_cnn
from mnist_jax.bench.render import CNN_ROW, USER_CNN_ROW
from mnist_jax.bench.settings import FULL_BENCH, BenchSettings
from mnist_jax.config import Config, cnn_conv_sides, cnn_feature_side, preset
from mnist_jax.pipelines import PIPELINES, make_pipeline
from mnist_jax.records import EpochMetrics
from mnist_jax.runtime import parallel
from mnist_jax.runtime.environment import fingerprint
from mnist_jax.steps import make_steps
from mnist_jax.sweep import sweep
from mnist_jax.training import train

TARGET_ACCURACY = 0.97


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


def gemm_gflops(device, n: int = 2048, repeats: int = 10) -> float:
    """The device's float32 rate on a large square matmul."""
    with jax.default_device(device):
        a = jnp.ones((n, n), jnp.float32)
        matmul = jax.jit(lambda x: x @ x)
        matmul(a).block_until_ready()
        start = time.perf_counter()
        for _ in range(repeats):
            out = matmul(a)
        out.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def time_to_accuracy(history: list[EpochMetrics]) -> float | None:
    """Training seconds until the test accuracy first reaches the target."""
    elapsed = 0.0
    for m in history[1:]:
        elapsed += m.epoch_seconds
        if m.test_accuracy >= TARGET_ACCURACY:
            return elapsed
    return None


def bench_training(config: Config, warmup: int, repeats: int, num_train: int) -> dict:
    """Whole training runs: seconds per epoch, compile time, time to the target, final accuracy."""
    runs = [train(config) for _ in range(warmup + repeats)][warmup:]
    epoch_seconds = [m.epoch_seconds for r in runs for m in r.history[1:]]
    reached = [t for t in map(time_to_accuracy, (r.history for r in runs)) if t is not None]
    return {
        "seconds_per_epoch": describe(epoch_seconds),
        "examples_per_second": num_train / statistics.median(epoch_seconds),
        "compile_seconds": describe([r.compile_seconds for r in runs]),
        "time_to_97": describe(reached) if reached else None,
        "runs_reaching_97": len(reached),
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


def bench_references(images, labels, epochs: int, cnn_epochs: int, cnn: Config) -> dict:
    """Seconds per epoch of the references; a row that says why where one is not installed."""
    results = {}
    for name, time_it, runs, discarded in (
        ("pytorch-cpu float32", references.torch_epoch_seconds, epochs + 1, 1),
        ("autograd float64 (seed notebook)", references.autograd_epoch_seconds, epochs, 0),
        (
            "pytorch-cpu float32 cnn",
            lambda x, y, n: references.torch_cnn_epoch_seconds(x, y, n, cnn),
            cnn_epochs + 1,
            1,
        ),
    ):
        try:
            seconds = time_it(images, labels, runs)
        except ImportError as e:
            results[name] = {
                "skipped": f"{e.name} is not installed (pip install 'mnist-jax[bench]')"
            }
            continue
        results[name] = {
            "seconds_per_epoch": describe(seconds[discarded:])
        }  # torch's first epoch warms up
    return results


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
    config = Config(
        layer_sizes=sizes,
        num_epochs=settings.epochs,
        data_dir=data_dir,
        matmul_precision=settings.matmul_precision,
    )
    shares = data.load(data_dir)
    flops = matmul_flops_per_epoch(sizes, shares["train"].total)
    cnn = preset("cnn").replace(
        num_epochs=settings.cnn_epochs,
        data_dir=data_dir,
        matmul_precision=settings.matmul_precision,
    )
    cnn_flops = cnn_flops_per_epoch(cnn, shares["train"].total)
    results = {
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "fingerprint": {**fingerprint(), "matmul_precision": settings.matmul_precision},
        "matmul_gflop_per_epoch": flops / 1e9,
        "cnn_config": cnn.to_dict(),
        "cnn_gflop_per_epoch": cnn_flops / 1e9,
        "platforms": {},
    }
    for device in (jax.devices(p)[0] for p in dict.fromkeys(["cpu", jax.default_backend()])):
        config = config.replace(platform=device.platform, devices=1)
        step(f"{device.platform}: the large-GEMM rate")
        with jax.default_matmul_precision(settings.matmul_precision):
            rate = gemm_gflops(device)
        entry = {
            "device": f"{device.platform}:{device.device_kind}",
            "gemm_gflops": rate,
            "floor_seconds_per_epoch": flops / rate / 1e9,
            "cnn_floor_seconds_per_epoch": cnn_flops / rate / 1e9,
            "pipelines": {},
        }
        epochs = f"{settings.epochs} epoch{'s' if settings.epochs > 1 else ''}"
        runs = f"{settings.warmup} + {settings.repeats} runs of {epochs}"
        for name, varied in [(p, config.replace(pipeline=p)) for p in PIPELINES] + [
            (
                "device float64 (seed preset)",
                config.replace(dtype="float64", init="numpy", shuffle=False),
            )
        ]:
            step(f"{device.platform}: {name}, {runs}")
            entry["pipelines"][name] = bench_training(
                varied, settings.warmup, settings.repeats, shares["train"].total
            )
        cnn_runs = (
            f"{settings.cnn_repeats} runs of {settings.cnn_epochs} "
            f"epoch{'s' if settings.cnn_epochs > 1 else ''}"
        )
        step(f"{device.platform}: {CNN_ROW}, {cnn_runs}")
        entry["pipelines"][CNN_ROW] = bench_training(
            cnn.replace(platform=device.platform, devices=1),
            0,
            settings.cnn_repeats,
            shares["train"].total,
        )
        step(f"{device.platform}: {USER_CNN_ROW}, {cnn_runs}")
        entry["pipelines"][USER_CNN_ROW] = bench_training(
            cnn.replace(model=user_cnn.IMPORT_PATH, platform=device.platform, devices=1),
            0,
            settings.cnn_repeats,
            shares["train"].total,
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
