"""The report's tables: final-epoch Markdown and LaTeX, and every epoch as CSV."""

from __future__ import annotations

import csv
import io
import math

from mnist_jax.records import SPLITS, metric_names
from mnist_jax.report.entries import Entry


def _cell(stats: dict, scale: float, plus_minus: str) -> str:
    """`mean ± std` (just the mean for a single seed): percentages to 2 decimals, losses to 3."""
    digits = 2 if scale == 100 else 3
    text = f"{scale * stats['mean']:.{digits}f}"
    return text + (f"{plus_minus}{scale * stats['std']:.{digits}f}" if stats["n"] > 1 else "")


def _columns(entries: list[Entry]) -> list[tuple[str, str, float]]:
    """(heading, metric, scale) for the final-epoch columns the entries share."""
    splits = [s for s in SPLITS if all(s in e.splits for e in entries)]
    return [(f"{s.capitalize()} accuracy (%)", f"{s}_accuracy", 100.0) for s in splits] + [
        ("Test loss", "test_loss", 1.0)
    ]


def markdown_table(entries: list[Entry]) -> str:
    """Final-epoch metrics as mean ± std over seeds, one row per entry."""
    columns = _columns(entries)
    lines = [
        "| Experiment | Seeds | Epochs | " + " | ".join(c[0] for c in columns) + " |",
        "|---|--:|--:|" + "--:|" * len(columns),
    ]
    for e in entries:
        last = e.statistics[-1]
        lines.append(
            f"| {e.name} | {e.seeds} | {last['epoch']} | "
            + " | ".join(_cell(last[metric], scale, " ± ") for _, metric, scale in columns)
            + " |"
        )
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _breakable(name: str) -> str:
    """An experiment's name escaped, a line allowed to break after each `=` and `,` too (a grid
    cell's settings), so that it wraps in its column."""
    return _latex_escape(name).replace("=", r"=\allowbreak{}").replace(",", r",\allowbreak{}")


# The LaTeX table's forms, by file (`mnist-jax report` writes each): its float and whether it is
# narrow (the test accuracy alone). Each fits its width in an `article` (the tests compile them).
LATEX_FORMS = {
    "table.tex": ("table", False),  # a one-column paper's \textwidth
    "table-narrow.tex": ("table", True),  # a column of a two-column paper
    "table-wide.tex": ("table*", False),  # both columns of a two-column paper
}


def latex_table(entries: list[Entry], *, narrow: bool = False, float_env: str = "table") -> str:
    """The Markdown table's content as a booktabs LaTeX table in `float_env` (`table`, or
    `table*` to span a two-column paper), its accuracies headed by split, the unit in the caption;
    `narrow`, the experiment, its seeds and its test accuracy only. It is a `tabularx` of the
    line's width: the experiments' names wrap in what the numbers leave."""
    columns = _columns(entries)
    if narrow:
        columns = [c for c in columns if c[1] == "test_accuracy"]
    headings = ["Experiment", "Seeds"] + ([] if narrow else ["Epochs"])
    headings += [h.replace(" accuracy (%)", " (%)") for h, _, _ in columns]
    rows = [
        [_breakable(e.name), str(e.seeds)]
        + ([] if narrow else [str(e.statistics[-1]["epoch"])])
        + [
            "$" + _cell(e.statistics[-1][metric], scale, r" \pm ") + "$"
            for _, metric, scale in columns
        ]
        for e in entries
    ]
    what = "test accuracy (\\%)" if narrow else "accuracy (\\%) and loss"
    body = "\n".join("    " + " & ".join(row) + r" \\" for row in rows)
    return "\n".join(
        [
            r"% Needs \usepackage{booktabs} and \usepackage{tabularx}.",
            rf"\begin{{{float_env}}}[t]",
            r"  \centering",
            r"  \setlength{\tabcolsep}{4pt}",
            r"  \begin{tabularx}{\linewidth}{>{\raggedright\arraybackslash}X"
            + "r" * (len(headings) - 1)
            + "}",
            r"    \toprule",
            "    " + " & ".join(_latex_escape(h) for h in headings) + r" \\",
            r"    \midrule",
            body,
            r"    \bottomrule",
            r"  \end{tabularx}",
            rf"  \caption{{MNIST at the final epoch: {what}, mean $\pm$ standard deviation "
            "over the seeds.}",
            r"  \label{tab:mnist-jax}",
            rf"\end{{{float_env}}}",
            "",
        ]
    )


def csv_table(entries: list[Entry]) -> str:
    """Every epoch of every entry: mean, std and 95% CI half-width of each metric."""
    metrics = [m for m in metric_names(SPLITS) if any(m in e.statistics[0] for e in entries)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["experiment", "sources", "seeds", "epoch"]
        + [f"{m}_{stat}" for m in metrics for stat in ("mean", "std", "ci95")]
    )
    for e in entries:
        for row in e.statistics:
            values = [
                row[m][stat] if m in row else ""
                for m in metrics
                for stat in ("mean", "std", "ci95")
            ]
            writer.writerow(
                [e.name, ";".join(e.sources), row["test_accuracy"]["n"], row["epoch"]]
                + ["" if isinstance(v, float) and math.isnan(v) else v for v in values]
            )
    return out.getvalue()
