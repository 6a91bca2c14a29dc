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
STRONG_CNN_RUNS = RESULTS.parent / "cnn-strong"  # the cnn-strong preset's runs, `cnn-strong-N`
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


def preset_runs(name: str) -> list[dict]:
    """The summaries of a CNN preset's committed single runs, one a seed."""
    folder, prefix = {"cnn": (CNN_RUNS, "cnn-cosine"), "cnn-strong": (STRONG_CNN_RUNS, name)}[name]
    return [
        json.loads(path.read_text()) for path in sorted(folder.glob(f"{prefix}-*/summary.json"))
    ]


def outcomes(name: str, root: Path = RESULTS) -> tuple[list[float], list[float]]:
    """A preset's committed test accuracies (one a seed) and training seconds per epoch."""
    timing = json.loads((root / "timing.json").read_text())
    if name == "default":
        return (
            [r["test_accuracy"] for r in timing["default"]][:1],
            [s for r in timing["default"] for s in r["epoch_seconds"]],
        )
    if name == "seed":
        bench = json.loads(BENCHMARK.read_text())["platforms"]["cpu"]["pipelines"][
            "device float64 (seed preset)"
        ]
        return [bench["final_test_accuracy"]["median"]], [bench["seconds_per_epoch"]["median"]]
    if name in ("cnn", "cnn-strong"):
        runs = preset_runs(name)
        return (
            [run["final_test_accuracy"] for run in runs],
            [m["epoch_seconds"] for run in runs for m in run["history"][1:]],
        )
    saved = json.loads((root / f"{name}-8-seeds" / "sweep.json").read_text())
    return (
        [history[-1]["test_accuracy"] for history in saved["per_seed"].values()],
        [s for r in timing[name] for s in r["epoch_seconds"]],
    )


def _mean_and_spread(accuracies: list[float]) -> str:
    spread = f" ± {100 * statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
    return f"{100 * statistics.mean(accuracies):.2f}{spread}"


def headline(root: Path = RESULTS) -> str:
    """The presets at a glance: each one's test accuracy and seconds per epoch on the committed
    results' machine (the README's and the docs' opening table)."""
    from mnist_jax.config import PRESET_HELP, preset

    lines = [
        "| preset | what it is | epochs | test accuracy (%) | seeds | s per epoch |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for name in PRESET_HELP:
        accuracies, seconds = outcomes(name, root)
        lines.append(
            f"| `{name}` | {PRESET_HELP[name]} | {preset(name).num_epochs} | "
            f"{_mean_and_spread(accuracies)} | {len(accuracies)} | "
            f"{statistics.median(seconds):.2f} |"
        )
    return "\n".join(lines) + "\n"


def preset_result(name: str, root: Path = RESULTS) -> str:
    """The line a preset's section on the Recipes page opens with: its test accuracy over the
    committed seeds, its lowest seed, its epochs and their median seconds, its parameters."""
    from mnist_jax.config import preset

    accuracies, seconds = outcomes(name, root)
    config = preset(name)
    line = (
        f"**`{name}`: {_mean_and_spread(accuracies)}% test accuracy** (mean ± standard "
        f"deviation over {len(accuracies)} seeds, the lowest {100 * min(accuracies):.2f}%) after "
        f"{config.num_epochs} epoch{'s' if config.num_epochs > 1 else ''} of a median "
        f"{statistics.median(seconds):.2f} s each on this 2-core CPU; "
        f"{parameter_count(config.to_dict()):,} parameters."
    )
    if name in ("cnn", "cnn-strong"):
        minutes = [run_minutes(run) for run in preset_runs(name)]
        line += (
            f" A run took {min(minutes):.1f} to {max(minutes):.1f} minutes, compiling, training "
            "and scoring every split each epoch."
        )
    return line + "\n"


# cnn-strong's goals: Deotte's mean over 1,500 single CNNs, beaten; every seed; each run's minutes.
STRONG_CNN_GOALS = {"mean": 0.9965, "lowest": 0.996, "minutes": 30.0}


def run_minutes(summary: dict) -> float:
    """A run's minutes: compiling, training and scoring every split each epoch."""
    return (summary["compile_seconds"] + summary["train_seconds"] + summary["eval_seconds"]) / 60


def strong_cnn_goals() -> str:
    """`cnn-strong`'s committed runs against its goals, a line each."""
    runs = preset_runs("cnn-strong")
    accuracies = [run["final_test_accuracy"] for run in runs]
    checks = [
        ("mean test accuracy", statistics.mean(accuracies), "mean", ">=", "%"),
        ("lowest seed", min(accuracies), "lowest", ">=", "%"),
        ("longest run", max(map(run_minutes, runs)), "minutes", "<", " minutes"),
    ]
    lines = []
    for what, value, goal, relation, unit in checks:
        target = STRONG_CNN_GOALS[goal]
        met = value >= target if relation == ">=" else value < target
        if unit == "%":
            value, target = 100 * value, 100 * target
        lines.append(
            f"- {what}: {value:.2f}{unit}, the goal {'at least' if relation == '>=' else 'under'} "
            f"{target:.2f}{unit}: **{'met' if met else 'not met'}**."
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
