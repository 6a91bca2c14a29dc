"""A benchmark's results as people read them: results.json, the Markdown of results.md (the
tables and the figures drawn from them), the docs' summary line, and two charts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from mnist_jax.runs.storage import write_json

TIMED_HEADER = (
    "| platform | implementation | s/epoch median [min, max] | examples/s | compile s | s to 97% "
    "test | final test % | vs PyTorch | vs floor |"
)
TORCH, AUTOGRAD, TORCH_CNN = (
    "pytorch-cpu float32",
    "autograd float64 (seed notebook)",
    "pytorch-cpu float32 cnn",
)
SEED_PRESET = "device float64 (seed preset)"
CNN_ROW = "device cnn (cnn preset)"
# the preset's network as a user writes it (`mnist_jax.bench.user_cnn`), trained through --model
USER_CNN_ROW = "device user cnn (cnn preset's network, --model)"


def timed_rows(results: dict) -> Iterator[tuple[str, str, dict]]:
    """(platform, implementation, timing) for every timed implementation, references last (on the
    CPU)."""
    for platform, entry in results["platforms"].items():
        for pipeline, timing in entry["pipelines"].items():
            yield platform, f"mnist_jax {pipeline}", timing
    for name, timing in results["references"].items():
        yield "cpu", name, timing


def machine_name(fingerprint: dict) -> str:
    """A result's name for people: its accelerators' kind and count, else its CPU's model and
    cores."""
    kinds = [a["kind"] for a in fingerprint["accelerators"]]
    if kinds:
        return ", ".join(f"{kinds.count(k)} x {k}" for k in dict.fromkeys(kinds))
    return f"{fingerprint['cpu']['model']} ({fingerprint['cpu']['cores']} cores)"


def machine(fingerprint: dict) -> str:
    """The machine in a few words: its accelerators and its CPU, or its CPU alone."""
    cpu = f"{fingerprint['cpu']['model']} ({fingerprint['cpu']['cores']} cores)"
    name = machine_name(fingerprint)
    return name if name == cpu else f"{name}; {cpu}"


def is_cnn(name: str) -> bool:
    """Whether a timed row trains the CNN (its PyTorch reference and FLOP floor are the CNN's)."""
    return "cnn" in name


def baselines(results: dict, platform: str, name: str) -> tuple[float | None, float]:
    """A row's PyTorch time and FLOP floor: the CNN's for a CNN row, else the MLP's."""
    entry = results["platforms"][platform]
    if is_cnn(name):
        return median(results["references"].get(TORCH_CNN)), entry["cnn_floor_seconds_per_epoch"]
    return median(results["references"].get(TORCH)), entry["floor_seconds_per_epoch"]


def median(timing: dict | None) -> float | None:
    return (
        timing["seconds_per_epoch"]["median"] if timing and "seconds_per_epoch" in timing else None
    )


def _cells(t: dict, torch: float | None, floor: float) -> list[str]:
    """A table row's cells after the names: timings, accuracy, ratios."""
    if "skipped" in t:
        return [f"skipped: {t['skipped']}"] + [""] * 7
    s = t["seconds_per_epoch"]
    trained = "compile_seconds" in t  # mnist_jax rows; the references only time epochs
    to97 = t.get("time_to_97")
    return [
        f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]",
        f"{t['examples_per_second']:,.0f}" if trained else "",
        f"{t['compile_seconds']['median']:.2f}" if trained else "",
        (f"{to97['median']:.2f}" if to97 else "not reached") if trained else "",
        f"{100 * t['final_test_accuracy']['median']:.2f}" if trained else "",
        f"{s['median'] / torch:.2f}" if torch else "n/a",
        f"{s['median'] / floor:.2f}",
    ]


def markdown(results: dict) -> str:
    """results.md: the machine, the timed table, each platform's sweeps and scaling, and what they
    show."""
    fp, config, settings = results["fingerprint"], results["config"], results["settings"]
    lines = [
        f"Machine: {machine(fp)}; jax {fp['versions'].get('jax')}, XLA_FLAGS='{fp['xla_flags']}', "
        f"commit {(fp['git_commit'] or 'none')[:7]}, {fp['date'][:10]}. Model "
        f"{config['layer_sizes']}, batch {config['batch_size']}; {settings['warmup']} warm-up and "
        f"{settings['repeats']} timed runs of {settings['epochs']} epochs per row; "
        f"{results['matmul_gflop_per_epoch']:.1f} GFLOP of matmuls per epoch. The `cnn` preset: "
        f"{settings['cnn_repeats']} runs of {settings['cnn_epochs']} epochs, "
        f"{results['cnn_gflop_per_epoch']:.0f} GFLOP of convolutions and matmuls per epoch; its "
        f"PyTorch time and floor are the CNN's. {results['seconds']:.0f} s in all.",
        "",
        TIMED_HEADER,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for platform, name, t in timed_rows(results):
        lines.append(
            "| "
            + " | ".join([platform, name, *_cells(t, *baselines(results, platform, name))])
            + " |"
        )
    for platform, entry in results["platforms"].items():
        lines += [
            "",
            f"{entry['device']}: large-GEMM rate {entry['gemm_gflops']:.0f} GFLOP/s, "
            f"so the MLP's matmul floor is {entry['floor_seconds_per_epoch']:.3f} s per epoch and "
            f"the CNN's {entry['cnn_floor_seconds_per_epoch']:.2f} s.",
            "",
            "| sweep | value | s/epoch (device pipeline) | matmul GFLOP/s |",
            "| --- | --- | --- | --- |",
        ]
        for field, rows in entry["sweeps"].items():
            lines += [
                f"| {field} | {row[field]} | {row['seconds_per_epoch']:.3f} "
                f"| {row['gflops']:.0f} |"
                for row in rows
            ]
        sweep = entry["seed_sweep"]
        lines += [
            "",
            f"Seed sweep on {platform}: {sweep['seeds']} seeds as one vmapped program took "
            f"{sweep['sweep_seconds']:.2f} s against {sweep['sequential_seconds']:.2f} s one "
            f"after another ({sweep['speedup']:.2f}x; training and evaluation, "
            f"{config['num_epochs']} epochs each).",
        ]
        scaling = entry["device_scaling"]
        lines += [
            "",
            f"Device-count scaling on {platform}"
            + (f" ({scaling['note']})" if scaling.get("note") else "")
            + ":",
            "",
            "| pipeline | devices | s/epoch |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {r['pipeline']} | {r['devices']} | {r['seconds_per_epoch']:.3f} |"
            for r in scaling["rows"]
        ]
        lines += ["", findings(results, platform)]
    return "\n".join(lines) + "\n"


def findings(results: dict, platform: str) -> str:
    """What a platform's figures say, in sentences: the paths against PyTorch and against the
    floor, the seed preset against the notebook's code, and the GEMM rate across the sweeps."""
    entry = results["platforms"][platform]
    device, stream, seed = (
        median(entry["pipelines"][p]) for p in ("device", "stream", SEED_PRESET)
    )
    torch, autograd = (median(results["references"].get(name)) for name in (TORCH, AUTOGRAD))
    fastest = "device" if device <= stream else "stream"
    text = [
        f"On {platform} the `device` path took {device:.3f} s per epoch and `stream` {stream:.3f} "
        f"s ({stream / device:.2f}x `device`)"
    ]
    text[-1] += (
        f"; against PyTorch's {torch:.3f} s on the CPU, `{fastest}` took "
        f"{min(device, stream) / torch:.2f}x "
        "its time."
        if torch
        else "."
    )
    text.append(
        f"One epoch is {results['matmul_gflop_per_epoch']:.1f} GFLOP of matmuls; at the measured "
        f"{entry['gemm_gflops']:.0f} GFLOP/s that is a floor of "
        f"{entry['floor_seconds_per_epoch']:.3f} s, and the `device` path runs at "
        f"{device / entry['floor_seconds_per_epoch']:.2f}x the floor."
    )
    cnn, torch_cnn = (
        median(entry["pipelines"].get(CNN_ROW)),
        median(results["references"].get(TORCH_CNN)),
    )
    if cnn:
        versus = (
            f"{cnn / torch_cnn:.2f}x PyTorch's {torch_cnn:.2f} s (channels-last) and "
            if torch_cnn
            else ""
        )
        text.append(
            f"The `cnn` preset took {cnn:.2f} s per epoch: {versus}"
            f"{cnn / entry['cnn_floor_seconds_per_epoch']:.2f}x its floor of "
            f"{entry['cnn_floor_seconds_per_epoch']:.2f} s."
        )
    user_cnn = median(entry["pipelines"].get(USER_CNN_ROW))
    if cnn and user_cnn:
        text.append(
            f"The same network written with `lax.conv_general_dilated` and trained through "
            f"`--model` took {user_cnn:.2f} s per epoch, {user_cnn / cnn:.2f}x the built-in "
            "preset's."
        )
    if autograd:
        text.append(
            f"The float64 seed preset took {seed:.3f} s per epoch, {autograd / seed:.1f}x faster "
            f"than the notebook's autograd code ({autograd:.3f} s)."
        )
    ends = [
        f"{rows[0]['gflops']:.0f} GFLOP/s at {label} {rows[0][field]} and "
        f"{rows[-1]['gflops']:.0f} at {label} {rows[-1][field]}"
        for field, label in (("batch_size", "batch"), ("width_scale", "width x"))
        if len(rows := entry["sweeps"][field]) > 1
    ]
    if ends:
        text.append(f"The matmuls ran at {'; '.join(ends)}.")
    return " ".join(text)


def summary_line(results: dict) -> str:
    """The docs' line: each platform's `device` and `stream` epochs against PyTorch's."""
    torch = median(results["references"].get(TORCH))
    parts = []
    for platform, entry in results["platforms"].items():
        device, stream = (median(entry["pipelines"][p]) for p in ("device", "stream"))
        versus = (
            f" ({device / torch:.2f}x and {stream / torch:.2f}x PyTorch's {torch:.3f} s)"
            if torch
            else ""
        )
        parts.append(
            f"{device:.3f} s per epoch for `device` and {stream:.3f} s for `stream` on "
            f"{platform}{versus}"
        )
    return (
        f"On {machine(results['fingerprint'])} the benchmark measured "
        + "; ".join(parts)
        + f" (`mnist-jax bench`, {results['fingerprint']['date'][:10]})."
    )


def write_report(results: dict, out: str) -> None:
    """results.json, results.md, chart.png and sweeps.png in `out`."""
    from mnist_jax.bench.charts import results_charts

    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    results_charts(list(timed_rows(results)), results["platforms"], out)


def read_results(path: str) -> dict:
    """A results.json, checked to be one."""
    with open(path) as f:
        results = json.load(f)
    missing = [
        key
        for key in ("config", "settings", "fingerprint", "platforms", "references")
        if key not in results
    ]
    if missing:
        raise ValueError(
            f"{path} is not a benchmark's results.json: it has no {', '.join(missing)}"
        )
    return results
