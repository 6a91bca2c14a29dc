"""The device check: what a machine with an accelerator runs first, to see whether the package
holds there. `python -m benchmarks.device_check --idx-dir DIR --out OUT` runs, one after
another, each step in a process group of its own, killed whole at the step's cap (seconds):

1. `fingerprint` (always first): the machine's fingerprint, taken in a child, since this process
   never imports JAX (a TPU admits one process; an idle GPU client would hold most of the
   memory). The check stops there, failing, if JAX sees no accelerator, unless `--allow-cpu`;
2. `tests`: the device subset of the suite (`pytest -m device`);
3. `prepare`: the MNIST files (`--idx-dir`, their checksums checked) as a tfds dataset in OUT;
4. `seed`: the seed preset's table, to set against the notebook's;
5. `cnn`: the `cnn` preset for one epoch;
6. `bench`: `mnist-jax bench --quick`;
7. `compare`: `mnist-jax bench compare` of this CPU's committed quick result and the bench's.

No child preallocates the device's memory (`XLA_PYTHON_CLIENT_PREALLOCATE=false`). The default
caps add up to five minutes. OUT holds each step's log, the runs' and the benchmark's files, and
`summary.json`: each step's command, exit status, seconds and cap, and the fingerprint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MNIST_JAX = [sys.executable, "-m", "mnist_jax.cli"]
BASELINE = ROOT / "benchmarks" / "results" / "quick" / "results.json"
CAPS = {
    "fingerprint": 20,
    "tests": 90,
    "prepare": 30,
    "seed": 20,
    "cnn": 30,
    "bench": 100,
    "compare": 10,
}
FINGERPRINT = (
    "import json, pathlib, sys; from mnist_jax.runtime.environment import fingerprint; "
    "text = json.dumps(fingerprint(), indent=2); print(text); "
    "pathlib.Path(sys.argv[1]).write_text(text)"
)


def step_commands(out: Path) -> dict[str, list[str]]:
    """Each step's command, in the order they run."""
    return {
        "fingerprint": [sys.executable, "-c", FINGERPRINT, str(out / "fingerprint.json")],
        "tests": [sys.executable, "-m", "pytest", "-m", "device", "-q", "-p", "no:cacheprovider"],
        "prepare": [*MNIST_JAX, "prepare"],
        "seed": [*MNIST_JAX, "train", "--preset", "seed", "--quiet", "--out", str(out / "seed")],
        "cnn": [
            *MNIST_JAX,
            *["train", "--preset", "cnn", "--epochs", "1", "--quiet", "--out", str(out / "cnn")],
        ],
        "bench": [*MNIST_JAX, "bench", "--quick", "--out", str(out / "bench")],
        # Side by side even where the settings differ: compare.md lists the differences.
        "compare": [
            *MNIST_JAX,
            *["bench", "compare", str(BASELINE), str(out / "bench" / "results.json")],
            *["--out", str(out / "compare"), "--allow-mismatch"],
        ],
    }


def child_environment(out: Path, idx_dir: str | None) -> dict[str, str]:
    """Every step's environment: this one, with the data under OUT and no preallocation."""
    env = {**os.environ, "TFDS_DATA_DIR": str(out / "tfds")}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if idx_dir:
        env["MNIST_JAX_IDX_DIR"] = str(Path(idx_dir).resolve())
    return env


def run_step(name: str, command: list[str], cap: float, out: Path, env: dict[str, str]) -> dict:
    """Runs one step into OUT/NAME.log in a new session, killing its whole process group at
    `cap` seconds (and anything it left running when it ends); returns its record."""
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            status = "timed out"
        finally:
            # A grandchild left alive could hold the device through the next step.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.perf_counter() - start
    return {"command": command, "status": status, "seconds": seconds, "cap_seconds": cap}


def parse_caps(given: list[str]) -> dict[str, float]:
    """The default caps, with each `STEP=SECONDS` given in their place."""
    caps = dict(CAPS)
    for item in given:
        match = re.fullmatch(r"([a-z]+)=(\d+(?:\.\d+)?)", item)
        if not match or match[1] not in CAPS or float(match[2]) <= 0:
            raise SystemExit(
                f"device check: --cap {item}: not STEP=SECONDS, the STEP one of {', '.join(CAPS)}"
            )
        caps[match[1]] = float(match[2])
    return caps


def failed(why: str) -> int:
    """The check's exit status on failure, after one line on stderr saying why."""
    print(f"device check failed: {why}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Runs the check; 0 if every step exited with 0."""
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
    later = [name for name in CAPS if name != "fingerprint"]
    parser.add_argument(
        "--steps", nargs="+", choices=later, default=later, help="the steps after the fingerprint"
    )
    defaults = ", ".join(f"{name}={seconds}" for name, seconds in CAPS.items())
    parser.add_argument(
        "--cap",
        action="append",
        default=[],
        metavar="STEP=SECONDS",
        help=f"a step's cap in place of its default ({defaults})",
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="check on the CPU when JAX sees no accelerator"
    )
    args = parser.parse_args(argv)
    caps = parse_caps(args.cap)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env, commands = child_environment(out, args.idx_dir), step_commands(out)
    summary = {"fingerprint": None, "allow_cpu": args.allow_cpu, "steps": {}}

    def run(name: str) -> int | str:
        record = summary["steps"][name] = run_step(name, commands[name], caps[name], out, env)
        print(
            f"{name}: {record['status']} in {record['seconds']:.1f} s (cap {caps[name]:g} s)",
            flush=True,
        )
        if name == "fingerprint" and record["status"] == 0:
            summary["fingerprint"] = json.loads((out / "fingerprint.json").read_text())
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return record["status"]

    if run("fingerprint") != 0:
        return failed(f"no fingerprint (see {out / 'fingerprint.log'})")
    if not summary["fingerprint"]["accelerators"] and not args.allow_cpu:
        return failed(
            f"JAX found no accelerator, only the CPU (see {out / 'fingerprint.log'}); "
            "--allow-cpu checks on the CPU"
        )
    statuses = {name: run(name) for name in commands if name in args.steps}
    broken = [name for name, status in statuses.items() if status != 0]
    return failed(f"{', '.join(broken)} (logs in {out})") if broken else 0


if __name__ == "__main__":
    sys.exit(main())
