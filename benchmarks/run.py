"""Benchmarks: `python -m benchmarks.run [--out DIR]`.

For every platform JAX sees (cpu, and gpu or tpu where present) and both pipelines, it
trains the default configuration and measures compile time, seconds per epoch,
examples/s and time to 97% test accuracy (warm-up runs discarded; medians, min and max
over repeats). In the same run it times the seed notebook's autograd code and the same
MLP in PyTorch, sweeps batch size and hidden width, and measures the machine's large-GEMM
rate to give the matmul floor. It writes results.json, results.md and two PNG charts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks import references
from benchmarks.scaling import scaling, time_epochs
from mnist_jax import Config, data, parallel, train
from mnist_jax.environment import environment, fingerprint
from mnist_jax.pipelines import PIPELINES
from mnist_jax.sweep import sweep as run_sweep

TARGET_ACCURACY = 0.97


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def matmul_flops_per_epoch(sizes, num_examples: int) -> float:
    """Forward and backward matmul FLOPs of one epoch (no input gradient for the first layer)."""
    mn = [m * n for m, n in zip(sizes[:-1], sizes[1:])]
    return 2 * num_examples * (2 * sum(mn) + sum(mn[1:]))


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


def time_to_accuracy(history) -> float | None:
    """Training seconds until the test accuracy first reaches the target."""
    elapsed = 0.0
    for m in history[1:]:
        elapsed += m.epoch_seconds
        if m.test_accuracy >= TARGET_ACCURACY:
            return elapsed
    return None


def bench_jax(config: Config, warmup: int, repeats: int, num_train: int) -> dict:
    """Full training runs: per-epoch seconds, compile time, time to target."""
    runs = [train(config) for _ in range(warmup + repeats)][warmup:]
    epoch_seconds = [m.epoch_seconds for r in runs for m in r.history[1:]]
    reached = [t for t in map(time_to_accuracy, (r.history for r in runs)) if t is not None]
    return {"seconds_per_epoch": stats(epoch_seconds),
            "examples_per_second": num_train / statistics.median(epoch_seconds),
            "compile_seconds": stats([r.compile_seconds for r in runs]),
            "time_to_97": stats(reached) if reached else None,
            "runs_reaching_97": len(reached),
            "final_test_accuracy": stats([r.final_test_accuracy for r in runs])}


def sweep(config: Config, shares, field: str, values: list, changes: list[dict], epochs: int = 3) -> list[dict]:
    """Seconds per epoch of the device pipeline on one device as settings vary."""
    rows = []
    for value, change in zip(values, changes):
        varied = config.replace(**change)
        seconds = time_epochs(varied, shares, parallel.make_mesh(1, varied.platform), "device", epochs)
        flops = matmul_flops_per_epoch(varied.layer_sizes, shares["train"].total)
        rows.append({field: value, **change, "seconds_per_epoch": seconds, "gflops": flops / seconds / 1e9})
    return rows


def device_scaling(config: Config, shares, counts: list[int]) -> dict:
    """Both pipelines on 1..N devices; CPU devices are simulated in a subprocess."""
    simulated = config.platform == "cpu"
    if not simulated:
        available = len(jax.devices(config.platform))
        return {"simulated": False, "rows": scaling(config, shares, [n for n in counts if n <= available])}
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(counts)}"}
    command = [sys.executable, "-m", "benchmarks.scaling", "--devices", ",".join(map(str, counts)),
               "--layer-sizes", ",".join(map(str, config.layer_sizes)), "--platform", "cpu"]
    if config.data_dir:
        command += ["--data-dir", os.path.abspath(config.data_dir)]
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `benchmarks` imports from
    proc = subprocess.run(command, env=env, cwd=repository, capture_output=True, text=True, check=True)
    return {"simulated": True, "rows": json.loads(proc.stdout.strip().splitlines()[-1]),
            "note": "simulated CPU devices share this machine's cores: this measures overhead, not speedup"}


def scaled_widths(sizes: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """The layer sizes with every hidden width times `scale`."""
    return (sizes[0], *(max(1, round(n * scale)) for n in sizes[1:-1]), sizes[-1])


def bench_sweep(config: Config, num_seeds: int) -> dict:
    """A vmapped seed sweep against the same seeds trained one after another (train + eval
    seconds in both, data loading and compilation excluded)."""
    seeds = [config.seed + i for i in range(num_seeds)]
    swept = run_sweep(config, seeds)
    one_by_one = [train(config.replace(seed=seed)) for seed in seeds]
    sequential = sum(m.eval_seconds + (m.epoch_seconds or 0) for r in one_by_one for m in r.history)
    return {"seeds": num_seeds, "sweep_seconds": swept.seconds, "sequential_seconds": sequential,
            "speedup": sequential / swept.seconds}


def bench_references(images, labels, epochs: int) -> dict:
    results = {}
    for name, fn, reps in (("pytorch-cpu float32", references.torch_epoch_seconds, epochs + 1),
                           ("autograd float64 (seed notebook)", references.autograd_epoch_seconds, epochs)):
        try:
            seconds = fn(images, labels, reps)
        except ImportError as e:
            results[name] = {"skipped": f"{e.name} is not installed (pip install -e '.[bench]')"}
            continue
        timed = seconds[1:] if name.startswith("pytorch") else seconds  # torch's first epoch warms up
        results[name] = {"seconds_per_epoch": stats(timed)}
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--data-dir", help="tfds data folder (default: tfds's)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline")
    parser.add_argument("--warmup", type=int, default=1, help="discarded runs per pipeline")
    parser.add_argument("--reference-epochs", type=int, default=2)
    parser.add_argument("--layer-sizes", default="784,200,100,10")
    parser.add_argument("--batch-sizes", default="64,128,256,512,1024", help="batch-size sweep")
    parser.add_argument("--width-scales", default="0.5,1,2,4", help="hidden-width sweep, times the widths")
    parser.add_argument("--device-counts", default="1,2,4,8", help="device-count scaling")
    parser.add_argument("--sweep-seeds", type=int, default=8, help="seeds in the sweep-vs-sequential comparison")
    args = parser.parse_args(argv)

    sizes = tuple(int(n) for n in args.layer_sizes.split(","))
    config = Config(layer_sizes=sizes, num_epochs=args.epochs, data_dir=args.data_dir)
    shares = {s: data.load_share(s, args.data_dir) for s in ("train", "test")}
    num_train = shares["train"].total
    flops = matmul_flops_per_epoch(sizes, num_train)
    devices = [jax.devices(p)[0] for p in dict.fromkeys(["cpu", jax.default_backend()])]
    machine = platform.processor() or platform.machine()
    results = {"config": config.to_dict(), "fingerprint": fingerprint(),
               "environment": {**environment(), "machine": machine, "cpu_count": os.cpu_count(),
                               "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
               "matmul_gflop_per_epoch": flops / 1e9, "platforms": {}}
    for device in devices:
        config = config.replace(platform=device.platform, devices=1)
        rate = gemm_gflops(device)
        entry = {"device": f"{device.platform}:{device.device_kind}", "gemm_gflops": rate,
                 "floor_seconds_per_epoch": flops / rate / 1e9, "pipelines": {}}
        for pipeline in PIPELINES:
            entry["pipelines"][pipeline] = bench_jax(config.replace(pipeline=pipeline), args.warmup,
                                                     args.repeats, num_train)
        seed_config = config.replace(dtype="float64", init="numpy", shuffle=False)
        entry["pipelines"]["device float64 (seed preset)"] = bench_jax(seed_config, args.warmup,
                                                                       args.repeats, num_train)
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        scales = [float(x) for x in args.width_scales.split(",")]
        entry["sweeps"] = {
            "batch_size": sweep(config, shares, "batch_size", batch_sizes,
                                [{"batch_size": b} for b in batch_sizes]),
            "width_scale": sweep(config, shares, "width_scale", scales,
                                 [{"layer_sizes": scaled_widths(sizes, x)} for x in scales]),
        }
        entry["seed_sweep"] = bench_sweep(config.replace(pipeline="device"), args.sweep_seeds)
        entry["device_scaling"] = device_scaling(config, shares, [int(n) for n in args.device_counts.split(",")])
        results["platforms"][device.platform] = entry
    results["references"] = bench_references(*data.load_split("train", args.data_dir, in_file_order=True),
                                             args.reference_epochs)
    os.makedirs(args.out, exist_ok=True)
    from benchmarks.report import write_report

    write_report(results, args.out)
    with open(os.path.join(args.out, "results.md")) as f:
        print(f.read())
    return results


if __name__ == "__main__":
    main()
