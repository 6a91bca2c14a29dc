"""What augmentation costs an epoch: each CNN preset's train step scanned over batches, as an epoch
is (`conv_forms.epoch_timer`), with `cnn-strong`'s shifts, rotations and zooms and without them,
the four taking turns call by call so that a drift in the machine's speed touches all alike.

`python -m benchmarks.augment_cost [--batches N] [--repeats R]` writes
benchmarks/results/augment-cost/results.json: each one's median seconds per epoch (scaled to
60,000 examples) and the machine's fingerprint. `render()` is the table on the docs' Performance
page; the goal is at most 1.15x the `cnn` preset's epoch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.conv_forms import epoch_timer, measured_on, summarise, take_turns, timing_cell

RESULTS = Path(__file__).resolve().parent / "results" / "augment-cost"
PRESETS = ("cnn", "cnn-strong")
AUGMENTATION = ("augment_shift", "augment_rotation", "augment_scale")


def measure(batches: int, repeats: int) -> dict:
    from mnist_jax import data
    from mnist_jax.config import preset
    from mnist_jax.runtime.environment import fingerprint

    strong = preset("cnn-strong")
    augmentation = {name: getattr(strong, name) for name in AUGMENTATION}
    train = data.load(strong.data_dir)["train"]
    configs = {}
    for name in PRESETS:
        plain = preset(name).replace(**dict.fromkeys(AUGMENTATION, 0.0))
        configs[(name, "without")] = plain
        configs[(name, "with")] = plain.replace(**augmentation)
    timers = {key: epoch_timer(config, train, batches) for key, config in configs.items()}
    seconds = take_turns(timers, repeats)
    results = {
        "batches": batches,
        "repeats": repeats,
        "augmentation": augmentation,
        "fingerprint": fingerprint(),
        "presets": {name: {} for name in PRESETS},
    }
    for (name, augmented), per_epoch in seconds.items():
        results["presets"][name][augmented] = summarise(per_epoch, timers[(name, augmented)][1])
    return results


def render(path: Path = RESULTS / "results.json") -> str:
    """Each preset's seconds per epoch without augmentation and with it, and their ratio."""
    saved = json.loads(path.read_text())
    moves = ", ".join(f"`{name}={value:g}`" for name, value in saved["augmentation"].items())
    lines = [
        "| preset | s/epoch without [min, max] | s/epoch with [min, max] | with / without |",
        "|---|--:|--:|--:|",
    ]
    for name, timings in saved["presets"].items():
        ratio = timings["with"]["seconds_per_epoch"] / timings["without"]["seconds_per_epoch"]
        lines.append(
            f"| `{name}` | {timing_cell(timings['without'])} | {timing_cell(timings['with'])} "
            f"| {ratio:.3f} |"
        )
    return "\n".join(lines) + (
        f"\n\nWith {moves}. {measured_on(saved)}, {saved['fingerprint']['date'][:10]}: "
        f"{saved['batches']} batches a call, the median of {saved['repeats']} calls of each, "
        "taking turns.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batches", type=int, default=40, help="batches per timed call (default: 40)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each (default: 7)")
    args = parser.parse_args()
    results = measure(args.batches, args.repeats)
    os.makedirs(RESULTS, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(render(), end="")


if __name__ == "__main__":
    main()
