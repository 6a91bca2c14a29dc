"""Start-up: where a command's wall time goes, before and after, measured side by side.

`python -m benchmarks.startup [--before REF]` runs, alternating, the code at git `REF` (default:
the commit before the start-up work) from a temporary checkout and the working tree's code, each
command in a fresh process as a user would type it:

- `train`: the default preset, `--out` a fresh folder; for the new code also its first run, with
  an empty compilation cache (the dataset and its array file already prepared, as `prepare` leaves
  them); every other run is a second run (each command is run once first, untimed);
- `sweep`: 3 seeds, 2 epochs;
- `grid`: the sweep over `--grid lr 0.001 0.003 --grid activation tanh relu` (24 model-epochs).

Each command's wall time (measured outside it) is split into import (`python -c` of the modules the
command loads, interpreter start included, apart), data (reading the splits, apart), compile, train
and evaluation (from the files the command wrote) and the rest. Medians over `--repeats` runs.
Writes benchmarks/results/startup/results.json; `render()` is the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "startup"
BEFORE = "ce5fc4b"  # the last commit before the start-up work (issue 14)
SWEEP = ["--seeds", "3", "--epochs", "2"]
GRID = SWEEP + ["--grid", "lr", "0.001", "0.003", "--grid", "activation", "tanh", "relu"]
MODEL_EPOCHS = 2 * 2 * 3 * 2  # the grid's cells x seeds x epochs
PHASES = ("import", "data", "compile", "train", "evaluation", "other")
COMMANDS = {"train": ["train", "--quiet"], "sweep": ["sweep", *SWEEP], "grid": ["sweep", *GRID]}

_DATA_PROBE = """
import time
import jax
from mnist_jax import data
jax.devices()  # the backend starts apart: the command does that once, whatever reads the data
start = time.perf_counter()
data.load() if hasattr(data, "load") else data.load_shares(0)  # the code before it had load_shares
print(time.perf_counter() - start)
"""
# The modules each command loads, by the names of either layout (the old code's TensorFlow comes
# with `training` or `sweep`); a name the code does not have is skipped.
_MODULES = {
    "train": [
        "mnist_jax.cli",
        "mnist_jax.console",
        "mnist_jax.reporters",
        "mnist_jax.distributed",
        "mnist_jax.runtime.distributed",
        "mnist_jax.training",
    ],
    "sweep": ["mnist_jax.cli", "mnist_jax.console", "mnist_jax.reporters", "mnist_jax.sweep"],
}
_IMPORT_PROBES = {
    command: "import importlib.util\n"
    f"for name in {modules!r}:\n"
    "    if importlib.util.find_spec(name): importlib.import_module(name)"
    for command, modules in _MODULES.items()
}
_TF_PROBE = (
    "import sys, mnist_jax\nfrom mnist_jax import train, Config\n"
    "print('tensorflow' in sys.modules)"
)


def run(code_dir: Path, args: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds and stdout of `python args` with the package imported from `code_dir`."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {code_dir} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def measure_command(code_dir: Path, command: list[str], env: dict) -> dict:
    """One command's wall time and the phases its output files record."""
    with tempfile.TemporaryDirectory() as out:
        wall, _ = run(code_dir, ["-m", "mnist_jax.cli", *command, "--out", out], env)
        files = {name: Path(out, name) for name in ("summary.json", "sweep.json", "grid.json")}
        saved = {
            name: json.loads(path.read_text()) for name, path in files.items() if path.exists()
        }
    if "summary.json" in saved:
        summary = saved["summary.json"]
        history = summary["history"]
        return {
            "wall": wall,
            "compile": summary["compile_seconds"],
            "train": sum(m["epoch_seconds"] or 0 for m in history),
            "evaluation": sum(m["eval_seconds"] or 0 for m in history),
            "compilations": summary.get("compilations"),
        }
    cells = saved["grid.json"]["cells"] if "grid.json" in saved else [saved["sweep.json"]]
    # Sweeps record training and evaluation together; the old code's time also holds compiling.
    compiled = all("compile_seconds" in cell for cell in cells)
    return {
        "wall": wall,
        "compile": sum(cell["compile_seconds"] for cell in cells) if compiled else None,
        "train and evaluation": sum(cell["seconds"] for cell in cells),
        "compilations": (saved.get("grid.json") or saved.get("sweep.json")).get("compilations"),
    }


def measure(code_dir: Path, cache_dir: str, first: bool) -> dict:
    """Every command once (and the import and data probes) for the code in `code_dir`."""
    env = {**os.environ, "PYTHONPATH": str(code_dir), "MNIST_JAX_COMPILATION_CACHE": cache_dir}
    row = {
        **{
            f"import {name}": run(code_dir, ["-c", probe], env)[0]
            for name, probe in _IMPORT_PROBES.items()
        },
        "library import": run(code_dir, ["-c", "from mnist_jax import train, Config"], env)[0],
        "tensorflow loaded": run(code_dir, ["-c", _TF_PROBE], env)[1].strip() == "True",
        "data": float(run(code_dir, ["-c", _DATA_PROBE], env)[1].split()[-1]),
    }
    if first:
        with tempfile.TemporaryDirectory() as empty:
            row["train, first run"] = measure_command(
                code_dir, ["train", "--quiet"], {**env, "MNIST_JAX_COMPILATION_CACHE": empty}
            )
    for name, command in COMMANDS.items():
        row[name] = measure_command(code_dir, command, env)
    return row


def warm_up(code_dir: Path, cache_dir: str) -> None:
    """Every command once, so that the measured runs are second runs (caches warm, files in the OS
    cache)."""
    env = {**os.environ, "PYTHONPATH": str(code_dir), "MNIST_JAX_COMPILATION_CACHE": cache_dir}
    for command in COMMANDS.values():
        measure_command(code_dir, command, env)


def median_rows(rows: list[dict]) -> dict:
    """The median of every number over the repeats (booleans and counts from the first)."""
    first = rows[0]
    merged = {}
    for key, value in first.items():
        if isinstance(value, dict):
            merged[key] = median_rows([row[key] for row in rows])
        elif isinstance(value, float):
            merged[key] = statistics.median(row[key] for row in rows)
        else:
            merged[key] = value
    return merged


def phases(row: dict, command: str) -> dict:
    """A command's wall time split into PHASES (import and data from the probes)."""
    timed = row[command]
    parts = {
        "import": row["import train" if command.startswith("train") else "import sweep"],
        "data": row["data"],
        "compile": timed["compile"],
    }  # None: in train
    if "train" in timed:
        parts |= {"train": timed["train"], "evaluation": timed["evaluation"]}
    else:
        parts |= {"train": timed["train and evaluation"], "evaluation": None}
    parts["other"] = timed["wall"] - sum(v for v in parts.values() if v is not None)
    return parts


def render(path: Path = RESULTS / "results.json") -> str:
    """The start-up table and the goals' ratios, from the committed results."""
    saved = json.loads(path.read_text())
    lines = [
        "| command | code | wall s | " + " | ".join(PHASES) + " | programs compiled |",
        "|---|---|--:|" + "--:|" * len(PHASES) + "--:|",
    ]
    for command in ("train, first run", "train", "sweep", "grid"):
        for version in ("before", "after"):
            row = saved[version]
            if command not in row:
                continue
            split = phases(row, command)
            cells = " | ".join(
                "(in train)" if split[p] is None else f"{split[p]:.2f}" for p in PHASES
            )
            count = row[command].get("compilations")
            lines.append(
                f"| {command} | {version} | {row[command]['wall']:.2f} | {cells} | "
                f"{'' if count is None else count} |"
            )
    lines += ["", *ratios(saved)]
    return "\n".join(lines) + "\n"


def ratios(saved: dict) -> list[str]:
    """The issue's goals, as measured: wall over training, import, and the grid's overhead."""
    out = []
    for version in ("before", "after"):
        if version not in saved:
            continue
        row = saved[version]
        train = row["train"]
        per_model_epoch = (train["train"] + train["evaluation"]) / saved["epochs"]
        fixed = train["wall"] - train["train"] - train["evaluation"]
        grid_ratio = (row["grid"]["wall"] - fixed) / (MODEL_EPOCHS * per_model_epoch)
        first = (
            f", first run "
            f"{row['train, first run']['wall'] / row['train, first run']['train']:.2f}x"
            if "train, first run" in row
            else ""
        )
        out.append(
            f"- {version}: `train` wall {train['wall'] / train['train']:.2f}x its training "
            f"seconds{first}; "
            f"`from mnist_jax import train, Config` {row['library import']:.2f} s "
            f"({'with' if row['tensorflow loaded'] else 'without'} TensorFlow); the grid "
            f"{grid_ratio:.2f}x its {MODEL_EPOCHS} model-epochs at one model's "
            f"{per_model_epoch:.2f} s of epoch and evaluation, beyond a run's {fixed:.2f} s of "
            "start-up."
        )
    return out


def checkout(ref: str, into: str) -> Path:
    """The package as it was at git `ref`, extracted into `into`."""
    archive = subprocess.run(
        ["git", "archive", ref, "mnist_jax"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return Path(into)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before", default=BEFORE, help=f"git ref of the old code (default: {BEFORE})"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of every command per version (default: 3)"
    )
    parser.add_argument("--out", default=str(RESULTS), help="folder for results.json")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    with tempfile.TemporaryDirectory() as old, tempfile.TemporaryDirectory() as cache:
        versions = {"before": checkout(args.before, old), "after": ROOT}
        rows = {name: [] for name in versions}
        for code_dir in versions.values():
            warm_up(code_dir, cache)
        for repeat in range(args.repeats):
            for name, code_dir in versions.items():
                rows[name].append(measure(code_dir, cache, first=name == "after"))
                print(f"repeat {repeat + 1}/{args.repeats}: {name} done", flush=True)
    saved = {
        "before_ref": args.before,
        "after_commit": commit.stdout.strip(),
        "repeats": args.repeats,
        "epochs": 5,
        "date": time.strftime("%Y-%m-%d"),
        **{name: median_rows(version_rows) for name, version_rows in rows.items()},
    }
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "results.json").write_text(json.dumps(saved, indent=2) + "\n")
    print(render(Path(args.out, "results.json")), end="")


if __name__ == "__main__":
    main()
