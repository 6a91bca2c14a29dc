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
SEEDS = list(range(42, 50))
PRESETS = ("fast", "strong")


def time_runs(repeats: int) -> dict:
    """Compile and training seconds of single runs, alternating presets within one process."""
    from mnist_jax.config import preset
    from mnist_jax.training import train

    configs = {"default": preset("default"), "fast": preset("fast"), "strong": preset("strong").replace(num_epochs=2)}
    runs = {name: [] for name in configs}
    for _ in range(repeats):
        for name, config in configs.items():
            result = train(config)
            runs[name].append({"compile_seconds": result.compile_seconds,
                               "epoch_seconds": [m.epoch_seconds for m in result.history[1:]],
                               "test_accuracy": result.final_test_accuracy})
    return runs


def render(root: Path = RESULTS) -> str:
    """The README's preset table and the fast-to-default ratio, from the committed files."""
    timing = json.loads((root / "timing.json").read_text())

    def run_seconds(name: str) -> float:
        return statistics.median(r["compile_seconds"] + sum(r["epoch_seconds"]) for r in timing[name])

    lines = ["| Preset | Parameters | Epochs | Test accuracy (%), 8 seeds | 95% CI | Lowest seed | Sweep seconds | "
             "One run: seconds per epoch |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name in PRESETS:
        saved = json.loads((root / f"{name}-8-seeds" / "sweep.json").read_text())
        sizes = saved["config"]["layer_sizes"]
        parameters = sum((m + 1) * n for m, n in zip(sizes[:-1], sizes[1:]))
        test = saved["statistics"][-1]["test_accuracy"]
        lowest = min(history[-1]["test_accuracy"] for history in saved["per_seed"].values())
        per_epoch = statistics.median(s for r in timing[name] for s in r["epoch_seconds"])
        lines.append(f"| {name} | {parameters:,} | {saved['config']['num_epochs']} | {100 * test['mean']:.2f} ± "
                     f"{100 * test['std']:.2f} | ± {100 * test['ci95']:.2f} | {100 * lowest:.2f} | "
                     f"{saved['seconds']:.1f} | {per_epoch:.2f} |")
    ratio = run_seconds("fast") / run_seconds("default")
    lines += ["", f"A `fast` run compiles and trains in {run_seconds('fast'):.2f} s, {ratio:.3f}x the "
                  f"{run_seconds('default'):.2f} s of a `default` run (medians of {len(timing['fast'])} runs each, "
                  "alternating, in one process)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), help="presets to sweep (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="single runs of each preset to time (default: 3)")
    args = parser.parse_args()
    from mnist_jax.config import preset
    from mnist_jax.storage import write_json
    from mnist_jax.sweep import sweep

    for name in args.presets:
        result = sweep(preset(name), SEEDS, str(RESULTS / f"{name}-8-seeds"))
        print(f"{name}: test {100 * result.statistics()[-1]['test_accuracy']['mean']:.2f}% in {result.seconds:.1f} s")
    if args.repeats:
        write_json(os.path.join(RESULTS, "timing.json"), time_runs(args.repeats))
    print(render())


if __name__ == "__main__":
    main()
