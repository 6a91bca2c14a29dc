"""Turns a benchmark run's results into results.json, results.md, chart.png and sweeps.png."""

from __future__ import annotations

import json
import os

import matplotlib.ticker
from matplotlib.figure import Figure


def _rows(results: dict):
    """(platform, name, entry) for every timed implementation, references last."""
    for name, entry in results["platforms"].items():
        for pipeline, timing in entry["pipelines"].items():
            yield name, f"mnist_jax {pipeline}", timing
    for name, timing in results["references"].items():
        yield "cpu", name, timing


def _ratio(value: float, reference: dict | None) -> str:
    if not reference or "seconds_per_epoch" not in reference:
        return "n/a"
    return f"{value / reference['seconds_per_epoch']['median']:.2f}"


def _cells(t: dict, torch: dict | None, floor: float) -> list[str]:
    """A table row's cells after the names: timings, accuracy, ratios."""
    if "skipped" in t:
        return [f"skipped: {t['skipped']}"] + [""] * 7
    s = t["seconds_per_epoch"]
    trained = "compile_seconds" in t  # mnist_jax rows; the references only time epochs
    to97 = t.get("time_to_97")
    return [f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]",
            f"{t['examples_per_second']:,.0f}" if trained else "",
            f"{t['compile_seconds']['median']:.2f}" if trained else "",
            (f"{to97['median']:.2f}" if to97 else "not reached") if trained else "",
            f"{100 * t['final_test_accuracy']['median']:.2f}" if trained else "",
            _ratio(s["median"], torch), f"{s['median'] / floor:.2f}"]


def markdown(results: dict) -> str:
    env, config = results["environment"], results["config"]
    torch = results["references"].get("pytorch-cpu float32")
    lines = [f"Benchmark on {env['machine']} ({env['cpu_count']} CPUs), jax {env['versions'].get('jax')}, "
             f"XLA_FLAGS='{env['XLA_FLAGS']}'. Config: {config['layer_sizes']}, batch {config['batch_size']}, "
             f"{config['num_epochs']} epochs; {results['matmul_gflop_per_epoch']:.1f} GFLOP of matmuls per epoch.",
             "",
             "| platform | implementation | s/epoch median [min, max] | examples/s | compile s | s to 97% test "
             "| final test % | vs PyTorch | vs floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for platform, name, t in _rows(results):
        floor = results["platforms"][platform]["floor_seconds_per_epoch"]
        lines.append("| " + " | ".join([platform, name, *_cells(t, torch, floor)]) + " |")
    for platform, entry in results["platforms"].items():
        lines += ["", f"{entry['device']}: large-GEMM rate {entry['gemm_gflops']:.0f} GFLOP/s, "
                  f"so the matmul floor is {entry['floor_seconds_per_epoch']:.3f} s per epoch.", "",
                  "| sweep | value | s/epoch (device pipeline) | matmul GFLOP/s |", "| --- | --- | --- | --- |"]
        for field, rows in entry["sweeps"].items():
            lines += [f"| {field} | {row[field]} | {row['seconds_per_epoch']:.3f} | {row['gflops']:.0f} |"
                      for row in rows]
        sweep = entry["seed_sweep"]
        lines += ["", f"Seed sweep on {platform}: {sweep['seeds']} seeds as one vmapped program took "
                  f"{sweep['sweep_seconds']:.2f} s against {sweep['sequential_seconds']:.2f} s one after another "
                  f"({sweep['speedup']:.2f}x; training and evaluation, {config['num_epochs']} epochs each)."]
        scaling = entry["device_scaling"]
        lines += ["", f"Device-count scaling on {platform}" + (f" ({scaling['note']})" if scaling.get("note") else "")
                  + ":", "", "| pipeline | devices | s/epoch |", "| --- | --- | --- |"]
        lines += [f"| {r['pipeline']} | {r['devices']} | {r['seconds_per_epoch']:.3f} |" for r in scaling["rows"]]
    return "\n".join(lines) + "\n"


def charts(results: dict, out: str) -> None:
    names, medians, errors = [], [], [[], []]
    for platform, name, t in _rows(results):
        if "seconds_per_epoch" in t:
            s = t["seconds_per_epoch"]
            names.append(f"{platform}: {name}")
            medians.append(s["median"])
            errors[0].append(s["median"] - s["min"])
            errors[1].append(s["max"] - s["median"])
    fig = Figure(figsize=(9, 0.5 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, medians, xerr=errors, color="tab:blue")
    for platform, entry in results["platforms"].items():
        ax.axvline(entry["floor_seconds_per_epoch"], ls="--", color="tab:red", label=f"{platform} matmul floor")
    ax.set(xlabel="seconds per epoch (median, min-max bars)", xscale="log", title="Seconds per training epoch")
    ax.invert_yaxis()
    ax.legend()
    fig.savefig(os.path.join(out, "chart.png"), dpi=120)

    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, field, label in zip(axes, ("batch_size", "width_scale"), ("batch size", "hidden width (x default)")):
        for platform, entry in results["platforms"].items():
            rows = entry["sweeps"][field]
            ax.plot([r[field] for r in rows], [r["seconds_per_epoch"] for r in rows], "o-", label=f"{platform} s/epoch")
            twin = ax.twinx()
            twin.plot([r[field] for r in rows], [r["gflops"] for r in rows], "s--", color="tab:green", label="GFLOP/s")
            twin.set_ylabel("matmul GFLOP/s", color="tab:green")
        values = [r[field] for r in next(iter(results["platforms"].values()))["sweeps"][field]]
        ax.set(xlabel=label, ylabel="seconds per epoch", xscale="log", yscale="log", title=f"Cost vs {label}")
        ax.set_xticks(values, labels=[f"{v:g}" for v in values])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(loc="upper left")
    ax = axes[2]
    for platform, entry in results["platforms"].items():
        scaling = entry["device_scaling"]
        for pipeline in dict.fromkeys(r["pipeline"] for r in scaling["rows"]):
            rows = [r for r in scaling["rows"] if r["pipeline"] == pipeline]
            simulated = " (simulated)" if scaling["simulated"] else ""
            ax.plot([r["devices"] for r in rows], [r["seconds_per_epoch"] for r in rows], "o-",
                    label=f"{platform}{simulated} {pipeline}")
    ax.set(xlabel="devices", ylabel="seconds per epoch", xscale="log", title="Cost vs device count")
    ax.set_xticks([r["devices"] for r in rows], labels=[str(r["devices"]) for r in rows])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend()
    fig.savefig(os.path.join(out, "sweeps.png"), dpi=120)


def write_report(results: dict, out: str) -> None:
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    charts(results, out)
