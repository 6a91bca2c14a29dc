"""The presets' committed results, and the README table rendered from them.

`python -m benchmarks.recipes` trains 8 seeds of each chosen preset on the test split (one
vmapped sweep each), then times single runs in one process, alternating: `default` and `fast`
(compile plus training seconds, `repeats` times each) and `strong` for two epochs (its seconds
per epoch). Writes benchmarks/results/recipes/{fast,strong}-8-seeds/sweep.json and timing.json.
The grids that chose the presets are `benchmarks/recipes.sh`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "recipes"
BENCHMARK = RESULTS.parent / "results.json"  # `python -m benchmarks.run`
CNN_RUNS = RESULTS.parent / "cnn"  # the cnn preset's runs, `cnn-cosine-N`
SEEDS = list(range(42, 50))
PRESETS = ("fast", "strong", "speedrun")


def time_runs(repeats: int) -> dict:
    """Compile and training seconds of single runs, alternating presets within one process."""
    from mnist_jax.config import preset
    from mnist_jax.training import train

    configs = {
        "default": preset("default"),
        "fast": preset("fast"),
        "strong": preset("strong").replace(num_epochs=2),
        "speedrun": preset("speedrun"),
    }
    runs = {name: [] for name in configs}
    for _ in range(repeats):
        for name, config in configs.items():
            result = train(config)
            runs[name].append(
                {
                    "compile_seconds": result.compile_seconds,
                    "epoch_seconds": [m.epoch_seconds for m in result.history[1:]],
                    "test_accuracy": result.final_test_accuracy,
                }
            )
    return runs


def parameter_count(config: dict) -> int:
    """The number of parameters of the model a saved config describes."""
    import math

    import jax

    from mnist_jax.config import Config
    from mnist_jax.steps import make_steps

    shapes = make_steps(Config.from_dict(config)).params_shape
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def render(root: Path = RESULTS) -> str:
    """The presets' table and each quick preset's time against `default`'s, from the committed
    files."""
    timing = json.loads((root / "timing.json").read_text())

    def run_seconds(name: str) -> float:
        return statistics.median(
            r["compile_seconds"] + sum(r["epoch_seconds"]) for r in timing[name]
        )

    lines = [
        "| Preset | Parameters | Epochs | Test accuracy (%), 8 seeds | 95% CI | Lowest seed | "
        "Sweep seconds | One run: seconds per epoch |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in PRESETS:
        saved = json.loads((root / f"{name}-8-seeds" / "sweep.json").read_text())
        parameters = parameter_count(saved["config"])
        test = saved["statistics"][-1]["test_accuracy"]
        lowest = min(history[-1]["test_accuracy"] for history in saved["per_seed"].values())
        per_epoch = statistics.median(s for r in timing[name] for s in r["epoch_seconds"])
        lines.append(
            f"| {name} | {parameters:,} | {saved['config']['num_epochs']} | "
            f"{100 * test['mean']:.2f} ± "
            f"{100 * test['std']:.2f} | ± {100 * test['ci95']:.2f} | {100 * lowest:.2f} | "
            f"{saved['seconds']:.1f} | {per_epoch:.2f} |"
        )
    lines.append("")
    for name in ("fast", "speedrun"):
        ratio = run_seconds(name) / run_seconds("default")
        lines.append(
            f"A `{name}` run compiles and trains in {run_seconds(name):.2f} s, {ratio:.3f}x the "
            f"{run_seconds('default'):.2f} s of a `default` run (medians of {len(timing[name])} "
            "runs each, alternating, in one process)."
        )
    speedrun = json.loads((root / "speedrun-8-seeds" / "sweep.json").read_text())["statistics"][
        -1
    ]["test_accuracy"]
    lines.append(
        f"`speedrun`'s 8 seeds average {100 * speedrun['mean']:.5f}% test accuracy "
        "(its goal: at least 99.0%)."
    )
    return "\n".join(lines) + "\n"


def grid_printout(name: str, root: Path = RESULTS) -> str:
    """A committed grid's table as `mnist-jax sweep --grid` printed it (its legend, heading and
    rows)."""
    from mnist_jax.config import settings_label
    from mnist_jax.records import SPLITS
    from mnist_jax.reporters.console import seed_table_header, seed_table_legend, seed_table_row

    saved = json.loads((root / name / "grid.json").read_text())
    seeds = saved["seeds"]
    splits = [
        s
        for s in SPLITS
        if all(f"{s}_accuracy" in cell["statistics"][-1] for cell in saved["cells"])
    ]
    labels = [settings_label(cell["settings"]) for cell in saved["cells"]]
    width = max(map(len, labels))
    rows = [
        seed_table_row(label, width, cell["statistics"][-1], splits, cell["seconds"])
        for label, cell in zip(labels, saved["cells"], strict=True)
    ]
    return (
        "\n".join(
            [
                seed_table_legend(seeds),
                seed_table_header("Cell", width, splits, seconds=True),
                *rows,
            ]
        )
        + "\n"
    )


def grid_table(name: str, root: Path = RESULTS) -> str:
    """A committed grid's table in Markdown: a row per cell, each split's accuracy % as mean
    +- 95% CI (std) over the seeds, and the cell's seconds, under the line naming the seeds."""
    from mnist_jax.config import settings_label
    from mnist_jax.records import SPLITS
    from mnist_jax.reporters.console import seed_table_legend

    saved = json.loads((root / name / "grid.json").read_text())
    splits = [
        s
        for s in SPLITS
        if all(f"{s}_accuracy" in cell["statistics"][-1] for cell in saved["cells"])
    ]

    def accuracy(row: dict) -> str:
        return f"{100 * row['mean']:.2f} ± {100 * row['ci95']:.2f} ({100 * row['std']:.2f})"

    lines = [
        seed_table_legend(saved["seeds"]).replace("+-", "±") + ":",
        "",
        "| cell | " + " | ".join(f"{s} accuracy %" for s in splits) + " | seconds |",
        "|---|" + "--:|" * (len(splits) + 1),
    ]
    for cell in saved["cells"]:
        final = cell["statistics"][-1]
        scores = " | ".join(accuracy(final[f"{s}_accuracy"]) for s in splits)
        lines.append(
            f"| `{settings_label(cell['settings'])}` | {scores} | {cell['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def headline(root: Path = RESULTS) -> str:
    """The presets at a glance: each one's test accuracy and seconds per epoch on the committed
    results' machine (the README's and the docs' opening table)."""
    from mnist_jax.config import PRESET_HELP, preset

    timing = json.loads((root / "timing.json").read_text())
    bench = json.loads(BENCHMARK.read_text())["platforms"]["cpu"]["pipelines"][
        "device float64 (seed preset)"
    ]
    cnn = [
        json.loads(path.read_text()) for path in sorted(CNN_RUNS.glob("cnn-cosine-*/summary.json"))
    ]
    rows = {  # test accuracies (one per seed), seconds per epoch
        "default": (
            [r["test_accuracy"] for r in timing["default"]][:1],
            [s for r in timing["default"] for s in r["epoch_seconds"]],
        ),
        "seed": ([bench["final_test_accuracy"]["median"]], [bench["seconds_per_epoch"]["median"]]),
        "cnn": (
            [run["final_test_accuracy"] for run in cnn],
            [m["epoch_seconds"] for run in cnn for m in run["history"][1:]],
        ),
    }
    for name in PRESETS:
        saved = json.loads((root / f"{name}-8-seeds" / "sweep.json").read_text())
        rows[name] = (
            [history[-1]["test_accuracy"] for history in saved["per_seed"].values()],
            [s for r in timing[name] for s in r["epoch_seconds"]],
        )
    lines = [
        "| preset | what it is | epochs | test accuracy (%) | seeds | s per epoch |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for name in PRESET_HELP:
        accuracies, seconds = rows[name]
        mean = 100 * statistics.mean(accuracies)
        spread = f" ± {100 * statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
        lines.append(
            f"| `{name}` | {PRESET_HELP[name]} | {preset(name).num_epochs} | {mean:.2f}{spread} | "
            f"{len(accuracies)} | {statistics.median(seconds):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--presets", nargs="*", default=list(PRESETS), help="presets to sweep (default: both)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="single runs of each preset to time (default: 3)"
    )
    args = parser.parse_args()
    from mnist_jax.config import preset
    from mnist_jax.runs.storage import write_json
    from mnist_jax.sweep import sweep

    for name in args.presets:
        result = sweep(preset(name), SEEDS, str(RESULTS / f"{name}-8-seeds"))
        print(
            f"{name}: test {100 * result.statistics()[-1]['test_accuracy']['mean']:.2f}% "
            f"in {result.seconds:.1f} s"
        )
    if args.repeats:
        write_json(os.path.join(RESULTS, "timing.json"), time_runs(args.repeats))
    print(render())


if __name__ == "__main__":
    main()
