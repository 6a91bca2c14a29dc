"""A CNN you bring, its convolutions rewritten into the package's forms or left as written, timed
where it runs (the train step scanned over batches, as an epoch is; `conv_forms.time_config`),
beside the built-in `cnn` preset in the same run.

The network is the preset's, written as researchers write it: in plain JAX
(`mnist_jax.bench.user_cnn`) and with Flax NNX, Flax Linen and Equinox
(`benchmarks.framework_cnns`), each through its import path as `--model` takes it, with the
preset's recipe. `python -m benchmarks.conv_rewrite [--batches N] [--native-batches M]
[--repeats R]` writes benchmarks/results/conv-rewrite/results.json: each model's median seconds
per epoch (scaled to 60,000 examples) rewritten (N batches a call) and as written (M batches: the
native convolution is slow), the built-in preset's before and after them, and the machine's
fingerprint. `render()` is the table on the docs' Performance page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from benchmarks.conv_forms import time_config

RESULTS = Path(__file__).resolve().parent / "results" / "conv-rewrite"
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
    results = {
        "batches": batches,
        "native_batches": native_batches,
        "repeats": repeats,
        "fingerprint": fingerprint(),
        "built_in": [time_config(config, train, batches, repeats)],
        "models": {},
    }
    for name, path in MODELS.items():
        user = config.replace(model=path)
        results["models"][name] = {
            "path": path,
            "rewritten": time_config(user.replace(conv_rewrite="on"), train, batches, repeats),
            "native": time_config(user.replace(conv_rewrite="off"), train, native_batches, 1),
        }
        print(
            name,
            {
                k: round(v["seconds_per_epoch"], 2)
                for k, v in results["models"][name].items()
                if k != "path"
            },
            flush=True,
        )
    results["built_in"].append(time_config(config, train, batches, repeats))
    return results


def built_in_seconds(saved: dict) -> float:
    """The built-in preset's seconds per epoch: the median of its two measurements' medians."""
    return statistics.median(t["seconds_per_epoch"] for t in saved["built_in"])


def render(path: Path = RESULTS / "results.json") -> str:
    """Each model's seconds per epoch rewritten and as written, over the built-in preset's."""
    saved = json.loads(path.read_text())
    built_in = built_in_seconds(saved)
    lines = [
        "| the `cnn` preset's network | s/epoch, rewritten [min, max] | vs built-in | "
        "s/epoch, as written | as written vs rewritten |",
        "|---|--:|--:|--:|--:|",
        "| built in (`--preset cnn`, `winograd` form) | "
        + ", ".join(f"{t['seconds_per_epoch']:.2f}" for t in saved["built_in"])
        + " (before, after) | 1.00 | | |",
    ]
    for name, timing in saved["models"].items():
        fast, native = timing["rewritten"], timing["native"]["seconds_per_epoch"]
        lines.append(
            f"| {name} | {fast['seconds_per_epoch']:.2f} [{fast['min']:.2f}, {fast['max']:.2f}] "
            f"| {fast['seconds_per_epoch'] / built_in:.2f} | {native:.1f} "
            f"| {native / fast['seconds_per_epoch']:.1f} |"
        )
    cpu = saved["fingerprint"]["cpu"]
    return "\n".join(lines) + (
        f"\n\nMeasured on {cpu['model']} ({cpu['cores']} cores), "
        f"{saved['fingerprint']['date'][:10]}: rewritten, {saved['batches']} batches a call, "
        f"median of {saved['repeats']} calls; as written, one call of "
        f"{saved['native_batches']} batches; the built-in preset's ratio is to the median of "
        "its two measurements.\n"
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
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (default: 3)")
    args = parser.parse_args()
    results = measure(args.batches, args.native_batches, args.repeats)
    os.makedirs(RESULTS, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(render(), end="")


if __name__ == "__main__":
    main()
