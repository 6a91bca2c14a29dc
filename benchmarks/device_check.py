"""A device check, ready to run on a machine with an accelerator: does the package hold there?

`python -m benchmarks.device_check --idx-dir DIR --out OUT` runs, in at most `--budget` seconds
(default 300), each step in a subprocess with what time is left:

1. `tests`: the non-slow suite (`python -m pytest -m "not slow"`);
2. `seed`: the seed preset's table (`mnist-jax train --preset seed`), to set against the
   notebook's;
3. `cnn`: the `cnn` preset for one epoch;
4. `bench`: `mnist-jax bench --quick`, whose results.json `mnist-jax bench compare` sets beside
   this CPU's committed `benchmarks/results/quick/results.json`.

OUT holds each step's log, the runs' and the benchmark's files, and `summary.json`: each step's
command, exit status and seconds, and the machine's fingerprint. `--steps` runs some of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MNIST_JAX = [sys.executable, "-m", "mnist_jax.cli"]


def steps(out: Path) -> dict[str, list[str]]:
    return {
        "tests": [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "not slow",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        "seed": [*MNIST_JAX, "train", "--preset", "seed", "--quiet", "--out", str(out / "seed")],
        "cnn": [
            *MNIST_JAX,
            "train",
            "--preset",
            "cnn",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(out / "cnn"),
        ],
        "bench": [*MNIST_JAX, "bench", "--quick", "--out", str(out / "bench")],
    }


def run_step(name: str, command: list[str], out: Path, seconds_left: float, env: dict) -> dict:
    """Runs one step into OUT/NAME.log, stopped when the budget runs out; returns its record."""
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        try:
            status = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, seconds_left),
            ).returncode
        except subprocess.TimeoutExpired:
            status = "timed out"
    return {"command": command, "status": status, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--idx-dir",
        default=os.environ.get("MNIST_JAX_IDX_DIR"),
        help="the four raw MNIST files (default: $MNIST_JAX_IDX_DIR)",
    )
    parser.add_argument(
        "--out", default="device-check", help="folder for the results (default: device-check)"
    )
    parser.add_argument(
        "--budget", type=float, default=300, help="seconds for all steps (default: 300)"
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=["tests", "seed", "cnn", "bench"],
        default=["tests", "seed", "cnn", "bench"],
        help="the steps to run (default: all)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TFDS_DATA_DIR": str(out / "tfds")}
    if args.idx_dir:
        env["MNIST_JAX_IDX_DIR"] = str(Path(args.idx_dir).resolve())
    deadline = time.perf_counter() + args.budget
    from mnist_jax.runtime.environment import fingerprint

    summary = {"fingerprint": fingerprint(), "budget_seconds": args.budget, "steps": {}}
    for name, command in steps(out).items():
        if name in args.steps:
            summary["steps"][name] = run_step(
                name, command, out, deadline - time.perf_counter(), env
            )
            print(
                f"{name}: {summary['steps'][name]['status']} in "
                f"{summary['steps'][name]['seconds']:.1f} s",
                flush=True,
            )
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(step["status"] == 0 for step in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
