"""The report's figure: learning curves over seeds with their confidence bands, sized for a
paper."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import matplotlib.ticker
from matplotlib.figure import Figure  # not pyplot: no global figure state, no backend switch

FIGURE_DPI = 300


def legend_columns(labels: Sequence[str]) -> int:
    """Two legend columns for short labels, one for long ones."""
    return 2 if max(map(len, labels)) <= 45 else 1


def figure_inches(labels: Sequence[str]) -> tuple[float, float]:
    """A two-column paper's full width; taller by each legend row."""
    return 7.0, 2.6 + 0.16 * -(-len(labels) // legend_columns(labels))


def plot_bands(entries: Sequence, path_stem: str) -> None:
    """Test error (%) and training loss by epoch for each report entry: the mean over its seeds
    and a shaded 95% confidence interval; written as `path_stem`.png and .pdf."""
    style = {
        "font.size": 8,
        "axes.titlesize": 9,
        "legend.fontsize": 7,
        "lines.linewidth": 1.2,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(style):
        labels = [f"{entry.name} (n={entry.seeds})" for entry in entries]
        fig = Figure(figsize=figure_inches(labels), layout="constrained")
        axes = fig.subplots(1, 2)
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
        sparse = matplotlib.ticker.FuncFormatter(
            lambda value, _: (
                f"{value:g}"
                if round(value / 10 ** math.floor(math.log10(value))) in (2, 5)
                else ""
            )
        )
        for metric, scale, ax, title in (
            ("test_accuracy", -100, axes[0], "Test error (%)"),
            ("train_loss", 1, axes[1], "Training loss (mean NLL)"),
        ):
            means = []
            for entry, label in zip(entries, labels, strict=True):
                rows = [row for row in entry.statistics if row["epoch"] > 0]
                epochs = [row["epoch"] for row in rows]
                offset = 100 if scale < 0 else 0
                mean = [offset + scale * row[metric]["mean"] for row in rows]
                (line,) = ax.plot(epochs, mean, marker="o", markersize=2.5, label=label)
                means += mean
                if entry.seeds > 1:
                    half = [abs(scale) * row[metric]["ci95"] for row in rows]
                    bands = [(m - h, m + h) for m, h in zip(mean, half, strict=True)]
                    ax.fill_between(
                        epochs,
                        [bottom for bottom, _ in bands],
                        [top for _, top in bands],
                        color=line.get_color(),
                        alpha=0.2,
                        linewidth=0,
                    )
            # The means set the range: a band reaching zero or below would stretch a log axis.
            low, high = min(means) / 1.5, max(means) * 1.5
            ax.set(xlabel="epoch", title=title, yscale="log", ylim=(low, high))
            ax.yaxis.set_major_formatter(plain)
            # Every minor tick labelled on an axis of less than a decade; beyond, the 2s and 5s
            # alone.
            ax.yaxis.set_minor_formatter(plain if high / low < 10 else sparse)
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.legend(
            *axes[0].get_legend_handles_labels(),
            loc="outside lower center",
            ncols=legend_columns(labels),
            frameon=False,
        )
        for suffix in ("png", "pdf"):
            fig.savefig(f"{path_stem}.{suffix}", dpi=FIGURE_DPI)
