"""A CNN you bring, its convolutions rewritten into the package's forms or left as written, timed
where it runs (the train step scanned over batches, as an epoch is; `conv_forms.epoch_timer`),
beside the built-in `cnn` preset in the same run.

The network is the preset's, written as researchers write it: in plain JAX
(`mnist_jax.bench.user_cnn`) and with Flax NNX, Flax Linen and Equinox
(`benchmarks.framework_cnns`), each through its import path as `--model` takes it, with the
preset's recipe. `python -m benchmarks.conv_rewrite [--batches N] [--native-batches M]
[--repeats R]` writes benchmarks/results/conv-rewrite/results.json: the built-in preset's and each
model's rewritten median seconds per epoch (scaled to 60,000 examples; N batches a call, the
models taking turns call by call, so that a drift in the machine's speed touches all alike), each
model's as written (one call of M batches: the native convolution is slow), and the machine's
fingerprint. `render()` is the table on the docs' Performance page.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.conv_forms import (
    epoch_timer,
    measured_on,
    summarise,
    take_turns,
    time_config,
    timing_cell,
)

RESULTS = Path(__file__).resolve().parent / "results" / "conv-rewrite"
BUILT_IN = "built in (`--preset cnn`, `winograd` form)"
MODELS = {
    "plain JAX (`lax.conv_general_dilated`)": "mnist_jax.bench.user_cnn:user_cnn",
    "Flax NNX (`nnx.Conv`)": "benchmarks.framework_cnns:nnx_cnn",
    "Flax Linen (`nn.Conv`)": "benchmarks.framework_cnns:linen_cnn",
    "Equinox (`eqx.nn.Conv2d`)": "benchmarks.framework_cnns:equinox_cnn",
}


def measure(batches: int, native_batches: int, repeats: int) -> dict:
    from mnist_jax import data
    from mnist_jax.config import preset
    from mnist_jax.runtime.environment import fingerprint

    config = preset("cnn")
    train = data.load(config.data_dir)["train"]
    users = {name: config.replace(model=path) for name, path in MODELS.items()}
    timers = {BUILT_IN: epoch_timer(config, train, batches)} | {
        name: epoch_timer(user.replace(conv_rewrite="on"), train, batches)
        for name, user in users.items()
    }
    seconds = take_turns(timers, repeats)
    rewritten = {name: summarise(seconds[name], timers[name][1]) for name in timers}
    results = {
        "batches": batches,
        "native_batches": native_batches,
        "repeats": repeats,
        "fingerprint": fingerprint(),
        "built_in": rewritten[BUILT_IN],
        "models": {},
    }
    for name, user in users.items():
        native = time_config(user.replace(conv_rewrite="off"), train, native_batches, 1)
        results["models"][name] = {
            "path": MODELS[name],
            "rewritten": rewritten[name],
            "native": native,
        }
        print(
            name,
            {
                "rewritten": rewritten[name]["seconds_per_epoch"],
                "native": native["seconds_per_epoch"],
            },
            flush=True,
        )
    return results


def render(path: Path = RESULTS / "results.json") -> str:
    """Each model's seconds per epoch rewritten and as written, over the built-in preset's."""
    saved = json.loads(path.read_text())
    built_in = saved["built_in"]["seconds_per_epoch"]

    lines = [
        "| the `cnn` preset's network | s/epoch, rewritten [min, max] | vs built-in | "
        "s/epoch, as written | as written vs rewritten |",
        "|---|--:|--:|--:|--:|",
        f"| {BUILT_IN} | {timing_cell(saved['built_in'])} | 1.00 | | |",
    ]
    for name, t in saved["models"].items():
        fast, native = t["rewritten"]["seconds_per_epoch"], t["native"]["seconds_per_epoch"]
        lines.append(
            f"| {name} | {timing_cell(t['rewritten'])} | {fast / built_in:.2f} | {native:.1f} "
            f"| {native / fast:.1f} |"
        )
    return "\n".join(lines) + (
        f"\n\n{measured_on(saved)}, "
        f"{saved['fingerprint']['date'][:10]}: rewritten, {saved['batches']} batches a call, "
        f"the median of {saved['repeats']} calls of each, the models taking turns; as written, "
        f"one call of {saved['native_batches']} batches.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batches", type=int, default=40, help="batches per timed call (default: 40)"
    )
    parser.add_argument(
        "--native-batches",
        type=int,
        default=10,
        help="batches of the one timed call as written (default: 10)",
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls of each rewritten model (default: 7)"
    )
    args = parser.parse_args()
    results = measure(args.batches, args.native_batches, args.repeats)
    os.makedirs(RESULTS, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(render(), end="")


if __name__ == "__main__":
    main()
