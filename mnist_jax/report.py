"""Tables and plots for papers from run, sweep and grid folders."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from mnist_jax.config import ConfigError, settings_label
from mnist_jax.results import SPLITS, metric_names
from mnist_jax.stats import statistics
from mnist_jax.storage import write_atomic

REPORT_FILES = ("table.md", "table.tex", "results.csv", "curves.png", "curves.pdf")
_IGNORED = ("seed", "data_dir")  # runs differing only in these are seeds of one experiment


@dataclass
class Entry:
    """One experiment: per epoch, statistics over its seeds of each metric."""

    name: str
    sources: list[str]
    statistics: list[dict]  # [{"epoch": e, "<split>_<accuracy|loss>": {"mean", "std", "ci95", "n"}}]

    @property
    def seeds(self) -> int:
        return self.statistics[-1]["test_accuracy"]["n"]

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if f"{s}_accuracy" in self.statistics[-1]]


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None


def _run_statistics(histories: list[list[dict]]) -> list[dict]:
    """Statistics over runs (each a summary.json history) of every metric they all report."""
    metrics = metric_names([s for s in SPLITS if histories[0][0].get(f"{s}_accuracy") is not None])
    return [{"epoch": epoch, **{m: statistics([h[epoch][m] for h in histories]) for m in metrics}}
            for epoch in range(len(histories[0]))]


def load_entries(paths: Sequence[str]) -> list[Entry]:
    """The experiments in run (summary.json), sweep (sweep.json) and grid (grid.json) folders.

    Completed runs whose configs differ only in the seed are pooled into one entry, placed
    where the first of them was named.
    """
    entries, runs = [], {}
    for path in paths:
        name = os.path.basename(os.path.normpath(path))
        if os.path.exists(os.path.join(path, "grid.json")):
            saved = _read_json(os.path.join(path, "grid.json"))
            entries += [Entry(f"{name}: {settings_label(cell['settings'])}", [path], cell["statistics"])
                        for cell in saved["cells"]]
        elif os.path.exists(os.path.join(path, "sweep.json")):
            entries.append(Entry(name, [path], _read_json(os.path.join(path, "sweep.json"))["statistics"]))
        elif os.path.exists(os.path.join(path, "summary.json")):
            summary = _read_json(os.path.join(path, "summary.json"))
            if summary["status"] != "completed":
                advice = "; resume it first" if summary["status"] == "interrupted" else ""
                raise ConfigError(f"{path}: the run is {summary['status']}, not completed{advice}")
            key = json.dumps({k: v for k, v in summary["config"].items() if k not in _IGNORED}, sort_keys=True)
            if key not in runs:
                entries.append(key)
            runs.setdefault(key, []).append((path, summary["history"]))
        else:
            raise ConfigError(f"{path}: not a run, sweep or grid folder (no summary.json, sweep.json or grid.json)")
    return [_pooled(runs[entry]) if isinstance(entry, str) else entry for entry in entries]


def _pooled(runs: list[tuple[str, list[dict]]]) -> Entry:
    """Runs of one config as one entry, named by their folders' common prefix."""
    names = [os.path.basename(os.path.normpath(path)) for path, _ in runs]
    common = os.path.commonprefix(names).rstrip("-_.") if len(names) > 1 else names[0]
    return Entry(common or names[0], [path for path, _ in runs], _run_statistics([history for _, history in runs]))


def _cell(stats: dict, scale: float, plus_minus: str) -> str:
    """`mean ± std` (just the mean for a single seed): percentages to 2 decimals, losses to 3."""
    digits = 2 if scale == 100 else 3
    text = f"{scale * stats['mean']:.{digits}f}"
    return text + (f"{plus_minus}{scale * stats['std']:.{digits}f}" if stats["n"] > 1 else "")


def _columns(entries: list[Entry]) -> list[tuple[str, str, float]]:
    """(heading, metric, scale) for the final-epoch columns the entries share."""
    splits = [s for s in SPLITS if all(s in e.splits for e in entries)]
    return ([(f"{s.capitalize()} accuracy (%)", f"{s}_accuracy", 100.0) for s in splits]
            + [("Test loss", "test_loss", 1.0)])


def markdown_table(entries: list[Entry]) -> str:
    """Final-epoch metrics as mean ± std over seeds, one row per entry."""
    columns = _columns(entries)
    lines = ["| Experiment | Seeds | Epochs | " + " | ".join(c[0] for c in columns) + " |",
             "|---|--:|--:|" + "--:|" * len(columns)]
    for e in entries:
        last = e.statistics[-1]
        lines.append(f"| {e.name} | {e.seeds} | {last['epoch']} | "
                     + " | ".join(_cell(last[metric], scale, " ± ") for _, metric, scale in columns) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def latex_table(entries: list[Entry]) -> str:
    """The Markdown table's content as a booktabs LaTeX table."""
    columns = _columns(entries)
    headings = ["Experiment", "Seeds", "Epochs"] + [c[0] for c in columns]
    rows = [[_latex_escape(e.name), str(e.seeds), str(e.statistics[-1]["epoch"])]
            + ["$" + _cell(e.statistics[-1][metric], scale, r" \pm ") + "$" for _, metric, scale in columns]
            for e in entries]
    body = "\n".join("    " + " & ".join(row) + r" \\" for row in rows)
    return "\n".join([
        r"% Needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"  \centering",
        r"  \begin{tabular}{l" + "r" * (len(headings) - 1) + "}",
        r"    \toprule",
        "    " + " & ".join(_latex_escape(h) for h in headings) + r" \\",
        r"    \midrule",
        body,
        r"    \bottomrule",
        r"  \end{tabular}",
        r"  \caption{MNIST, final epoch: mean $\pm$ standard deviation over the seeds.}",
        r"  \label{tab:mnist-jax}",
        r"\end{table}",
        ""])


def csv_table(entries: list[Entry]) -> str:
    """Every epoch of every entry: mean, std and 95% CI half-width of each metric."""
    metrics = [m for m in metric_names(SPLITS) if any(m in e.statistics[0] for e in entries)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["experiment", "sources", "seeds", "epoch"]
                    + [f"{m}_{stat}" for m in metrics for stat in ("mean", "std", "ci95")])
    for e in entries:
        for row in e.statistics:
            values = [row[m][stat] if m in row else "" for m in metrics for stat in ("mean", "std", "ci95")]
            writer.writerow([e.name, ";".join(e.sources), row["test_accuracy"]["n"], row["epoch"]]
                            + ["" if isinstance(v, float) and math.isnan(v) else v for v in values])
    return out.getvalue()


def report(paths: Sequence[str], out_dir: str) -> list[Entry]:
    """Writes table.md, table.tex, results.csv, curves.png and curves.pdf into `out_dir`."""
    from mnist_jax.plots import plot_bands  # matplotlib loads only here

    entries = load_entries(paths)
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("table.md", markdown_table(entries)), ("table.tex", latex_table(entries)),
                       ("results.csv", csv_table(entries))):
        write_atomic(os.path.join(out_dir, name), text.encode())
    plot_bands(entries, os.path.join(out_dir, "curves"))
    return entries
