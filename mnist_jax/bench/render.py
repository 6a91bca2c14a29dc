"""A benchmark's results as people read them: results.json, the Markdown of results.md (the
tables and the figures drawn from them), the docs' summary line, and two charts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from mnist_jax.runs.storage import write_json

AUTOGRAD = "autograd float64 (seed notebook)"
SEED_PRESET = "device float64 (seed preset)"
CNN_ROW = "device cnn (cnn preset)"
# the preset's network as a user writes it (`mnist_jax.bench.user_cnn`), trained through --model
USER_CNN_ROW = "device user cnn (cnn preset's network, --model)"
SPEEDRUN_ROW = "device speedrun (speedrun preset)"
# Results made before PyTorch could run on CUDA named its rows by the CPU.
_LEGACY_REFERENCES = {
    "pytorch-cpu float32": "pytorch float32",
    "pytorch-cpu float32 cnn": "pytorch float32 cnn",
}
# JAX's name for the platform of each device PyTorch may run on.
_TORCH_PLATFORMS = {"cuda": "gpu", "cpu": "cpu"}
FLOOR_DTYPE = "bfloat16"  # every platform's second floor
ABSENT = "—"  # a figure the result does not hold (made before it was measured)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def torch_row(dtype: str, cnn: bool = False) -> str:
    """The name of PyTorch's MLP (or CNN) row in a run of `dtype`."""
    return f"pytorch {dtype}{' cnn' if cnn else ''}"


def row_model(name: str) -> str:
    """The model a timed row trains, whose FLOPs make its floor: `mlp`, `cnn` or `speedrun`."""
    return "speedrun" if "speedrun" in name else "cnn" if "cnn" in name else "mlp"


def target_accuracy(name: str) -> float:
    """The test accuracy a row is timed to: 99% for the speedrun preset, 97% for the rest."""
    return 0.99 if row_model(name) == "speedrun" else 0.97


def numerics(results: dict) -> tuple[str, str]:
    """The run's dtype and matmul precision (float32 and highest in results from before they were
    settings)."""
    settings = results["settings"]
    return settings.get("dtype", "float32"), settings.get("matmul_precision", "highest")


def row_dtype(results: dict, name: str) -> str:
    """The dtype a timed row computes in: float64 for the seed preset and the notebook's autograd
    code (their names say so), the run's dtype for the rest."""
    return "float64" if SEED_PRESET in name or name == AUTOGRAD else numerics(results)[0]


def reference_timings(results: dict) -> dict[str, dict]:
    """The references' timings by row name; an older result's under today's names, on the CPU
    (where every reference ran before their devices were recorded)."""
    return {
        _LEGACY_REFERENCES.get(name, name): {"device": "cpu", **timing}
        if "seconds_per_epoch" in timing
        else timing
        for name, timing in results["references"].items()
    }


def timed_rows(results: dict) -> Iterator[tuple[str, str, dict]]:
    """(platform, implementation, timing) for every timed implementation, references last (on the
    platform of the device they ran on)."""
    for platform, entry in results["platforms"].items():
        for pipeline, timing in entry["pipelines"].items():
            yield platform, f"mnist_jax {pipeline}", timing
    for name, timing in reference_timings(results).items():
        yield _TORCH_PLATFORMS.get(timing.get("device", "cpu"), "cpu"), name, timing


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


def median(timing: dict | None) -> float | None:
    return (
        timing["seconds_per_epoch"]["median"] if timing and "seconds_per_epoch" in timing else None
    )


def time_to_target(timing: dict) -> tuple[float, dict | None]:
    """A trained row's target test accuracy and the seconds it took to reach it (None where no
    run did); an older result's time to 97%."""
    if "target_accuracy" in timing:
        return timing["target_accuracy"], timing["time_to_target"]
    return 0.97, timing.get("time_to_97")


def gflop_per_epoch(results: dict) -> dict[str, float]:
    """Each model's GFLOP of a training epoch, by `row_model` (no `speedrun` in older results)."""
    gflop = {"mlp": results["matmul_gflop_per_epoch"], "cnn": results["cnn_gflop_per_epoch"]}
    if "speedrun_gflop_per_epoch" in results:
        gflop["speedrun"] = results["speedrun_gflop_per_epoch"]
    return gflop


def gemm_rates(results: dict, platform: str) -> dict[str, dict]:
    """A platform's large-GEMM measurements by dtype, the run's dtype first: each one's GFLOP/s
    (and, where recorded, the matmuls' size, how many were timed together, their seconds)."""
    entry = results["platforms"][platform]
    return entry.get("gemm") or {numerics(results)[0]: {"gflops": entry["gemm_gflops"]}}


def floor_dtypes(results: dict) -> list[str]:
    """The dtypes of the floors the table shows: the run's, and bfloat16."""
    return list(dict.fromkeys([numerics(results)[0], FLOOR_DTYPE]))


def floor_seconds(results: dict, platform: str, model: str, dtype: str) -> float | None:
    """Seconds of one epoch of `model`'s FLOPs at the platform's large-GEMM rate in `dtype`; None
    where the result has no such platform (PyTorch's on a GPU that JAX did not use), rate or
    model."""
    if platform not in results["platforms"]:
        return None
    rate = gemm_rates(results, platform).get(dtype)
    gflop = gflop_per_epoch(results).get(model)
    return gflop / rate["gflops"] if rate and gflop else None


def torch_seconds(results: dict, model: str) -> tuple[float | None, str | None]:
    """PyTorch's seconds per epoch of the MLP (or, for a CNN row's model, of the CNN) in the run's
    dtype, and the device it ran on; None where it was not timed. The speedrun has none."""
    if model == "speedrun":
        return None, None
    timing = reference_timings(results).get(torch_row(numerics(results)[0], model == "cnn"))
    return median(timing), (timing or {}).get("device")


def _figure(value: float | None, form: str) -> str:
    return ABSENT if value is None else format(value, form)


def timed_header(results: dict) -> list[str]:
    """The timed table's header and rule: the rows' dtype and matmul precision in it."""
    dtype, precision = numerics(results)
    names = [
        "platform",
        f"implementation ({dtype} unless named; matmul precision {precision})",
        "s/epoch median [min, max]",
        "examples/s",
        "compile s",
        "s to target test accuracy",
        "final test %",
        "vs PyTorch",
        *(f"vs {dtype} floor" for dtype in floor_dtypes(results)),
    ]
    return ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]


def _cells(results: dict, platform: str, name: str, t: dict) -> list[str]:
    """A table row's cells after the platform: the implementation, timings, accuracy, ratios."""
    shown = f"{name} on {t['device']}" if "device" in t else name
    floors = len(floor_dtypes(results))
    if "skipped" in t:
        return [shown, f"skipped: {t['skipped']}"] + [""] * (5 + floors)
    s = t["seconds_per_epoch"]
    trained = "compile_seconds" in t  # mnist_jax rows; the references only time epochs
    target, reached = time_to_target(t)
    model = row_model(name)
    torch = torch_seconds(results, model)[0]
    return [
        shown,
        f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]",
        _figure(t.get("examples_per_second"), ",.0f"),
        f"{t['compile_seconds']['median']:.2f}" if trained else "",
        (f"{reached['median']:.2f}" if reached else "not reached") + f" ({100 * target:.0f}%)"
        if trained
        else "",
        f"{100 * t['final_test_accuracy']['median']:.2f}" if trained else "",
        f"{s['median'] / torch:.2f}" if torch else "n/a",
        *(
            _figure(floor and s["median"] / floor, ".2f")
            for floor in (
                floor_seconds(results, platform, model, dtype) for dtype in floor_dtypes(results)
            )
        ),
    ]


def gemm_line(results: dict, platform: str) -> str:
    """A platform's large-GEMM rates (with the matmuls timed, where recorded) and the floors of an
    epoch of each model they make."""
    entry, precision = results["platforms"][platform], numerics(results)[1]
    rates = [
        f"{gemm['gflops']:.0f} GFLOP/s in {dtype}"
        + (
            f" ({gemm['count']} x {gemm['size']}-square matmuls in {gemm['seconds']:.3f} s)"
            if "size" in gemm
            else ""
        )
        for dtype, gemm in gemm_rates(results, platform).items()
    ]
    labels = {"mlp": "the MLP", "cnn": "the CNN", "speedrun": "the speedrun's CNN"}
    floors = [
        " and ".join(
            f"{seconds:.3g} s in {dtype}"
            for dtype in gemm_rates(results, platform)
            if (seconds := floor_seconds(results, platform, model, dtype)) is not None
        )
        + f" for {labels[model]}"
        for model in gflop_per_epoch(results)
    ]
    return (
        f"{entry['device']}: large-GEMM rate {' and '.join(rates)}, at matmul precision "
        f"{precision}; so an epoch's FLOP floor is {'; '.join(floors)}."
    )


def markdown(results: dict) -> str:
    """results.md: the machine, the timed table, each platform's sweeps and scaling, and what they
    show."""
    fp, config, settings = results["fingerprint"], results["config"], results["settings"]
    dtype, precision = numerics(results)
    speedrun = (
        f" The `speedrun` preset: {_plural(settings['cnn_repeats'], 'run')} of its "
        f"{_plural(results['speedrun_config']['num_epochs'], 'epoch')}, "
        f"{results['speedrun_gflop_per_epoch']:.0f} GFLOP per epoch, timed to 99% test "
        "accuracy (the other rows to 97%)."
        if "speedrun_config" in results
        else ""
    )
    lines = [
        f"Machine: {machine(fp)}; jax {fp['versions'].get('jax')}, XLA_FLAGS='{fp['xla_flags']}', "
        f"commit {(fp['git_commit'] or 'none')[:7]}, {fp['date'][:10]}. Model "
        f"{config['layer_sizes']}, batch {config['batch_size']}, {dtype}, matmul precision "
        f"{precision}; {settings['warmup']} warm-up and "
        f"{settings['repeats']} timed runs of {settings['epochs']} epochs per row; "
        f"{results['matmul_gflop_per_epoch']:.1f} GFLOP of matmuls per epoch. The `cnn` preset: "
        f"{settings['cnn_repeats']} runs of {settings['cnn_epochs']} epochs, "
        f"{results['cnn_gflop_per_epoch']:.0f} GFLOP of convolutions and matmuls per epoch; its "
        f"PyTorch time and floor are the CNN's.{speedrun} {results['seconds']:.0f} s in all.",
        "",
        *timed_header(results),
    ]
    lines += [
        "| " + " | ".join([platform, *_cells(results, platform, name, t)]) + " |"
        for platform, name, t in timed_rows(results)
    ]
    for platform, entry in results["platforms"].items():
        lines += [
            "",
            gemm_line(results, platform),
            "",
            f"| sweep | value | s/epoch (device pipeline; {dtype}, matmul precision {precision}) "
            "| matmul GFLOP/s |",
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
            f"| pipeline | devices | s/epoch ({dtype}, matmul precision {precision}) |",
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
    floor, the CNNs and the speedrun, the seed preset against the notebook's code, and the GEMM
    rate across the sweeps."""
    entry, dtype = results["platforms"][platform], numerics(results)[0]
    device, stream, seed = (
        median(entry["pipelines"][p]) for p in ("device", "stream", SEED_PRESET)
    )
    torch, torch_device = torch_seconds(results, "mlp")
    autograd = median(reference_timings(results).get(AUTOGRAD))
    fastest = "device" if device <= stream else "stream"
    text = [
        f"On {platform} the `device` path took {device:.3f} s per epoch and `stream` {stream:.3f} "
        f"s ({stream / device:.2f}x `device`)"
    ]
    text[-1] += (
        f"; against PyTorch's {torch:.3f} s on {torch_device}, `{fastest}` took "
        f"{min(device, stream) / torch:.2f}x its time."
        if torch
        else "."
    )
    floor = floor_seconds(results, platform, "mlp", dtype)
    text.append(
        f"One epoch is {results['matmul_gflop_per_epoch']:.1f} GFLOP of matmuls; at the measured "
        f"{gemm_rates(results, platform)[dtype]['gflops']:.0f} GFLOP/s in {dtype} that is a floor "
        f"of {floor:.3f} s, and the `device` path runs at {device / floor:.2f}x the floor."
    )
    cnn, (torch_cnn, _) = median(entry["pipelines"].get(CNN_ROW)), torch_seconds(results, "cnn")
    if cnn:
        versus = (
            f"{cnn / torch_cnn:.2f}x PyTorch's {torch_cnn:.2f} s (channels-last) and "
            if torch_cnn
            else ""
        )
        cnn_floor = floor_seconds(results, platform, "cnn", dtype)
        text.append(
            f"The `cnn` preset took {cnn:.2f} s per epoch: {versus}"
            f"{cnn / cnn_floor:.2f}x its floor of {cnn_floor:.2f} s."
        )
    user_cnn = median(entry["pipelines"].get(USER_CNN_ROW))
    if cnn and user_cnn:
        text.append(
            f"The same network written with `lax.conv_general_dilated` and trained through "
            f"`--model` took {user_cnn:.2f} s per epoch, {user_cnn / cnn:.2f}x the built-in "
            "preset's."
        )
    speedrun = entry["pipelines"].get(SPEEDRUN_ROW)
    if speedrun:
        target, reached = time_to_target(speedrun)
        text.append(
            f"The `speedrun` preset took {median(speedrun):.2f} s per epoch and "
            + (
                f"reached {100 * target:.0f}% test accuracy in {reached['median']:.2f} s of "
                f"training ({speedrun['runs_reaching_target']} of "
                f"{speedrun['final_test_accuracy']['n']} runs)."
                if reached
                else f"did not reach {100 * target:.0f}% test accuracy."
            )
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
    torch, torch_device = torch_seconds(results, "mlp")
    parts = []
    for platform, entry in results["platforms"].items():
        device, stream = (median(entry["pipelines"][p]) for p in ("device", "stream"))
        versus = (
            f" ({device / torch:.2f}x and {stream / torch:.2f}x PyTorch's {torch:.3f} s on "
            f"{torch_device})"
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


def floor_lines(results: dict) -> list[tuple[str, float]]:
    """Each platform's floor of an epoch of each model in the run's dtype, labelled, for the
    chart."""
    dtype = numerics(results)[0]
    return [
        (f"{platform} {model} floor ({dtype})", seconds)
        for platform in results["platforms"]
        for model in gflop_per_epoch(results)
        if (seconds := floor_seconds(results, platform, model, dtype)) is not None
    ]


def write_report(results: dict, out: str) -> None:
    """results.json, results.md, chart.png and sweeps.png in `out`."""
    from mnist_jax.bench.charts import results_charts

    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    results_charts(list(timed_rows(results)), floor_lines(results), results["platforms"], out)


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
