"""The CNN layer's forms (`Config.cnn_form`: `mnist_jax.models.conv.conv_relu_pool`'s) timed where
they run: the train step (forward pass and both gradients) scanned over batches, as an epoch is,
for each CNN preset.

`python -m benchmarks.conv_forms [--batches N] [--repeats R]` compiles one scan of N real batches
per form, times R calls after one discarded, and writes benchmarks/results/conv-forms/results.json:
each form's median seconds per epoch (scaled to 60,000 examples), its compile seconds, and the
machine's fingerprint. `render()` is the table on the docs' Performance page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "conv-forms"
TRAIN_SIZE = 60_000


def epoch_timer(config, train, batches: int) -> tuple[Callable[[], float], float]:
    """`config`'s train step scanned over the first `batches` batches of `train` (the training
    split's `data.Share`), compiled: a function that runs it once and returns the seconds scaled
    to an epoch of 60,000 examples, and the seconds compiling took."""
    import jax
    import numpy as np

    from mnist_jax.pipelines import train_over
    from mnist_jax.steps import Batch, make_steps

    steps = make_steps(config, train_size=TRAIN_SIZE)
    shape, rows = (batches, config.batch_size), batches * config.batch_size
    items = Batch(
        train.images[:rows].reshape(*shape, 28, 28, 1),
        train.labels[:rows].reshape(shape),
        np.ones(shape, bool),
    )

    def epoch(state, items):
        return train_over(steps.train_step, state, items, jax.random.key(0), may_be_empty=False)

    start = time.perf_counter()
    compiled = jax.jit(epoch, donate_argnums=0).lower(steps.init(0), items).compile()
    compile_seconds = time.perf_counter() - start

    def timed() -> float:
        state = steps.init(0)
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, items))
        return (time.perf_counter() - start) * TRAIN_SIZE / rows

    return timed, compile_seconds


def take_turns(timers: dict, repeats: int) -> dict:
    """Each of `timers`' (`epoch_timer`s, by key) seconds over `repeats` calls, the timers taking
    turns call by call so that a drift in the machine's speed touches all alike; the first turn
    is discarded."""
    seconds = {key: [] for key in timers}
    for turn in range(repeats + 1):
        for key, (timed, _) in timers.items():
            elapsed = timed()
            if turn:
                seconds[key].append(elapsed)
    return seconds


def summarise(per_epoch: list[float], compile_seconds: float) -> dict:
    return {
        "seconds_per_epoch": statistics.median(per_epoch),
        "min": min(per_epoch),
        "max": max(per_epoch),
        "compile_seconds": compile_seconds,
    }


def time_config(config, train, batches: int, repeats: int) -> dict:
    """Seconds per epoch of `config`'s train step (`epoch_timer`): the median, min and max of
    `repeats` calls after one discarded, and the compile seconds."""
    timed, compile_seconds = epoch_timer(config, train, batches)
    timed()
    return summarise([timed() for _ in range(repeats)], compile_seconds)


def measure(presets: list[str], batches: int, repeats: int) -> dict:
    from mnist_jax import data
    from mnist_jax.config import preset
    from mnist_jax.models.conv import LAYER_FORMS
    from mnist_jax.runtime.environment import fingerprint

    results = {"batches": batches, "repeats": repeats, "fingerprint": fingerprint(), "presets": {}}
    for name in presets:
        # Forms alternate, so that a drift in the machine's speed touches all of them alike.
        config = preset(name)
        train = data.load(config.data_dir)["train"]
        results["presets"][name] = {
            form: time_config(config.replace(cnn_form=form), train, batches, repeats)
            for form in LAYER_FORMS
        }
        print(
            name,
            {
                form: round(t["seconds_per_epoch"], 2)
                for form, t in results["presets"][name].items()
            },
            flush=True,
        )
    return results


def timing_cell(t: dict) -> str:
    """A timing's table cell: the median seconds per epoch, then the min and max."""
    return f"{t['seconds_per_epoch']:.2f} [{t['min']:.2f}, {t['max']:.2f}]"


def measured_on(saved: dict) -> str:
    """The sentence under a table, up to the machine: `Measured on MODEL (N cores)`."""
    cpu = saved["fingerprint"]["cpu"]
    return f"Measured on {cpu['model']} ({cpu['cores']} cores)"


def render(path: Path = RESULTS / "results.json") -> str:
    """The forms side by side, per preset: seconds per epoch and compile seconds, and each form's
    time over the fastest's."""
    saved = json.loads(path.read_text())
    lines = [
        "| preset | form | s/epoch median [min, max] | compile s | vs fastest |",
        "|---|---|--:|--:|--:|",
    ]
    for name, forms in saved["presets"].items():
        fastest = min(t["seconds_per_epoch"] for t in forms.values())
        for form, t in forms.items():
            lines.append(
                f"| {name} | {form} | {timing_cell(t)} | "
                f"{t['compile_seconds']:.2f} | {t['seconds_per_epoch'] / fastest:.2f} |"
            )
    return "\n".join(lines) + (
        f"\n\n{measured_on(saved)}, {saved['batches']} batches "
        f"a call, median of {saved['repeats']} calls, {saved['fingerprint']['date'][:10]}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="+", default=["cnn"], help="CNN presets to time (default: cnn)"
    )
    parser.add_argument(
        "--batches", type=int, default=40, help="batches per timed call (default: 40)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per form (default: 3)")
    args = parser.parse_args()
    results = measure(args.presets, args.batches, args.repeats)
    os.makedirs(RESULTS, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(render(), end="")


if __name__ == "__main__":
    main()
