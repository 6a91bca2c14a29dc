"""Reports for papers (`mnist-jax report`): tables and a figure from run, sweep and grid
folders."""

from __future__ import annotations

import os
from collections.abc import Sequence

from mnist_jax.report.entries import Entry, load_entries
from mnist_jax.report.tables import LATEX_FORMS, csv_table, latex_table, markdown_table
from mnist_jax.runs.storage import write_atomic

__all__ = [
    "REPORT_FILES",
    "LATEX_FORMS",
    "Entry",
    "csv_table",
    "latex_table",
    "load_entries",
    "markdown_table",
    "report",
]

REPORT_FILES = ("table.md", *LATEX_FORMS, "results.csv", "curves.png", "curves.pdf")


def report(paths: Sequence[str], out_dir: str) -> list[Entry]:
    """Writes `REPORT_FILES` into `out_dir`: the Markdown table, the LaTeX table in each of
    `LATEX_FORMS`, every epoch as CSV, and the curves as PNG and PDF."""
    from mnist_jax.report.plots import plot_bands  # matplotlib loads only here

    entries = load_entries(paths)
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (
        ("table.md", markdown_table(entries)),
        *(
            (name, latex_table(entries, narrow=narrow, float_env=float_env))
            for name, (float_env, narrow) in LATEX_FORMS.items()
        ),
        ("results.csv", csv_table(entries)),
    ):
        write_atomic(os.path.join(out_dir, name), text.encode())
    plot_bands(entries, os.path.join(out_dir, "curves"))
    return entries
