"""Device-count scaling: `python -m benchmarks.scaling --devices 1,2,4,8 [--data-dir D]`.

Times epochs of both pipelines on meshes of growing size and prints JSON rows. On a CPU,
run it with XLA_FLAGS=--xla_force_host_platform_device_count=8 (benchmarks.run does):
simulated devices share the same cores, so there it measures the overhead of splitting
batches and summing gradients, not a speedup. On several GPUs or a TPU slice it shows
the real scaling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mnist_jax import Config, data, parallel
from mnist_jax.pipelines import PIPELINES, make_pipeline
from mnist_jax.steps import make_steps


def time_epochs(config: Config, shares: dict, mesh, pipeline: str = "device", epochs: int = 3) -> float:
    """Median seconds per epoch after one warm-up epoch."""
    config = config.replace(num_epochs=epochs + 1, pipeline=pipeline)
    steps = make_steps(config)
    state = parallel.replicate(steps.init(config.seed), mesh)
    runner = make_pipeline(config, steps, shares, state, mesh)
    state = runner.train_epoch(state, 1, lambda done: None).state
    seconds = []
    for epoch in range(2, epochs + 2):
        start = time.perf_counter()
        state = runner.train_epoch(state, epoch, lambda done: None).state
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def scaling(config: Config, shares: dict, counts: list[int], epochs: int = 3) -> list[dict]:
    """Seconds per epoch for each pipeline and device count."""
    return [{"pipeline": pipeline, "devices": n,
             "seconds_per_epoch": time_epochs(config, shares, parallel.make_mesh(n, config.platform), pipeline, epochs)}
            for pipeline in PIPELINES for n in counts]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--data-dir")
    parser.add_argument("--platform")
    parser.add_argument("--layer-sizes", default="784,200,100,10")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    config = Config(layer_sizes=tuple(int(n) for n in args.layer_sizes.split(",")), data_dir=args.data_dir,
                    platform=args.platform)
    shares = {s: data.load_share(s, args.data_dir) for s in ("train", "test")}
    print(json.dumps(scaling(config, shares, [int(n) for n in args.devices.split(",")], args.epochs)))


if __name__ == "__main__":
    main()
