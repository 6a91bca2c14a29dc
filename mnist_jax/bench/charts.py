"""The benchmark's charts: seconds per epoch per implementation, the sweeps, and machines
compared."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.ticker
from matplotlib.figure import Figure
from matplotlib.patches import Patch


def _log_ticks(ax, values: Sequence[float]) -> None:
    ax.set_xticks(values, labels=[f"{v:g}" for v in values])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def epoch_chart(
    rows: Sequence[tuple[str, str, dict]], floors: Sequence[tuple[str, float]], path: str
) -> None:
    """A bar per timed implementation, (platform, name, timing): the median with min-max whiskers,
    and each floor, (label, seconds), as a line."""
    timed = [
        (f"{platform}: {name}", t["seconds_per_epoch"])
        for platform, name, t in rows
        if "seconds_per_epoch" in t
    ]
    fig = Figure(figsize=(9, 0.5 * len(timed) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(
        [name for name, _ in timed],
        [s["median"] for _, s in timed],
        color="tab:blue",
        xerr=[
            [s["median"] - s["min"] for _, s in timed],
            [s["max"] - s["median"] for _, s in timed],
        ],
    )
    for i, (label, seconds) in enumerate(floors):
        ax.axvline(seconds, ls=("--", ":", "-.")[i % 3], color=f"C{i + 3}", label=label)
    ax.set(
        xlabel="seconds per epoch (median, min-max bars)",
        xscale="log",
        title="Seconds per training epoch",
    )
    ax.invert_yaxis()
    ax.legend()
    fig.savefig(path, dpi=120)


def sweep_charts(platforms: dict, path: str) -> None:
    """Seconds per epoch (and GFLOP/s) against batch size and hidden width; then against device
    count."""
    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, field, label in zip(
        axes[:2],
        ("batch_size", "width_scale"),
        ("batch size", "hidden width (x default)"),
        strict=True,
    ):
        for platform, entry in platforms.items():
            rows = entry["sweeps"][field]
            ax.plot(
                [r[field] for r in rows],
                [r["seconds_per_epoch"] for r in rows],
                "o-",
                label=f"{platform} s/epoch",
            )
            twin = ax.twinx()
            twin.plot(
                [r[field] for r in rows],
                [r["gflops"] for r in rows],
                "s--",
                color="tab:green",
                label="GFLOP/s",
            )
            twin.set_ylabel("matmul GFLOP/s", color="tab:green")
        ax.set(
            xlabel=label,
            ylabel="seconds per epoch",
            xscale="log",
            yscale="log",
            title=f"Cost vs {label}",
        )
        _log_ticks(ax, [r[field] for r in next(iter(platforms.values()))["sweeps"][field]])
        ax.legend(loc="upper left")
    ax, counts = axes[2], set()
    for platform, entry in platforms.items():
        scaling = entry["device_scaling"]
        for pipeline in dict.fromkeys(r["pipeline"] for r in scaling["rows"]):
            rows = [r for r in scaling["rows"] if r["pipeline"] == pipeline]
            counts |= {r["devices"] for r in rows}
            ax.plot(
                [r["devices"] for r in rows],
                [r["seconds_per_epoch"] for r in rows],
                "o-",
                label=f"{platform}{' (simulated)' if scaling['simulated'] else ''} {pipeline}",
            )
    ax.set(
        xlabel="devices", ylabel="seconds per epoch", xscale="log", title="Cost vs device count"
    )
    _log_ticks(ax, sorted(counts))
    ax.legend()
    fig.savefig(path, dpi=120)


def results_charts(
    rows: Sequence[tuple[str, str, dict]],
    floors: Sequence[tuple[str, float]],
    platforms: dict,
    out: str,
) -> None:
    """chart.png (the timed rows against the floors) and sweeps.png (the platforms' sweeps) in
    `out`."""
    epoch_chart(rows, floors, os.path.join(out, "chart.png"))
    sweep_charts(platforms, os.path.join(out, "sweeps.png"))


def compare_chart(rows: Sequence[dict], baseline: str, path: str) -> None:
    """Seconds per epoch (median), a bar per row of the comparison: the results' rows of each
    implementation together, coloured by result, each labelled with its time over the
    baseline's."""
    results = list(dict.fromkeys(row["result"] for row in rows))
    names = list(dict.fromkeys(row["implementation"] for row in rows))
    ordered = sorted(
        rows, key=lambda row: (names.index(row["implementation"]), results.index(row["result"]))
    )
    colours = {result: f"C{i}" for i, result in enumerate(results)}
    fig = Figure(figsize=(10, 0.32 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    positions = range(len(ordered))
    ax.barh(
        positions,
        [row["seconds"] for row in ordered],
        color=[colours[row["result"]] for row in ordered],
    )
    ax.set_yticks(
        positions, labels=[f"{row['implementation']} [{row['platform']}]" for row in ordered]
    )
    for position, row in zip(positions, ordered, strict=True):
        ratio = f" ({row['vs_baseline']:.2f}x)" if row["vs_baseline"] is not None else ""
        ax.annotate(
            f" {row['seconds']:.3f} s{ratio}", (row["seconds"], position), va="center", fontsize=7
        )
    ax.set(
        xlabel=f"seconds per epoch (median); in brackets, the time over {baseline}'s",
        title="Seconds per training epoch, by result",
    )
    ax.margins(x=0.2)
    ax.invert_yaxis()
    ax.legend(
        handles=[Patch(color=colour, label=result) for result, colour in colours.items()],
        fontsize=7,
    )
    fig.savefig(path, dpi=120)
