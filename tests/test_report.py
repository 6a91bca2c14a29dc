"""The paper report (`mnist-jax report`): tables and figures that parse and match the runs they
read."""

import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mnist_jax.cli import main
from mnist_jax.report.plots import FIGURE_DPI, figure_inches
from tests.helpers import TINY_FLAGS


@pytest.fixture(scope="module")
def experiments(data_dir, tmp_path_factory):
    """Two single-seed runs of one config, a sweep and a grid."""
    root = tmp_path_factory.mktemp("experiments")
    common = [*TINY_FLAGS, "--epochs", "2", "--data-dir", data_dir]
    for seed in (1, 2):
        assert (
            main(
                [
                    "train",
                    *common,
                    "--seed",
                    str(seed),
                    "--quiet",
                    "--out",
                    str(root / f"runs-{seed}"),
                ]
            )
            == 0
        )
    assert main(["sweep", "--seeds", "3", *common, "--out", str(root / "sweep")]) == 0
    assert (
        main(
            [
                "sweep",
                "--seeds",
                "2",
                *common,
                "--out",
                str(root / "grid"),
                "--grid",
                "optimizer",
                "adam",
                "sgd",
                "--grid",
                "layer_sizes",
                "784,16,10",
                "784,8,8,10",
            ]
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def report_dir(experiments, tmp_path_factory):
    """The report of the experiments."""
    out = tmp_path_factory.mktemp("report")
    dirs = [str(experiments / name) for name in ("runs-1", "runs-2", "sweep", "grid")]
    assert main(["report", *dirs, "--out", str(out)]) == 0
    return out


# Each LaTeX form in the document it is for: (file, document class options).
LATEX_DOCUMENTS = [
    ("table.tex", ""),
    ("table-narrow.tex", "twocolumn"),
    ("table-wide.tex", "twocolumn"),
]


@pytest.mark.parametrize("name, options", LATEX_DOCUMENTS)
def test_each_latex_form_compiles_within_its_papers_width(report_dir, tmp_path, name, options):
    """`\\input` into a plain `article` with booktabs and tabularx, as a paper would: it
    compiles, and no line is wider than its column (no `Overfull \\hbox` in the log)."""
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-recommended)")
    shutil.copy(report_dir / name, tmp_path / name)
    (tmp_path / "paper.tex").write_text(
        f"\\documentclass[{options}]{{article}}\\usepackage{{booktabs,tabularx}}\n"
        f"\\begin{{document}}\\input{{{name}}}\\end{{document}}\n"
    )
    compiled = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
    )
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert compiled.returncode == 0, log[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 0
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)


def test_report_writes_tables_and_figures_that_parse(experiments, tmp_path, capsys):
    dirs = [str(experiments / name) for name in ("runs-1", "runs-2", "sweep", "grid")]
    assert main(["report", *dirs, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out

    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    names = ["runs", "sweep"] + [
        f"grid: optimizer={o} layer_sizes={s}"
        for o in ("adam", "sgd")
        for s in ("784,16,10", "784,8,8,10")
    ]
    assert (
        list(dict.fromkeys(r["experiment"] for r in rows)) == names and len(rows) == len(names) * 3
    )
    swept = json.loads((experiments / "sweep" / "sweep.json").read_text())["statistics"]
    for row in (r for r in rows if r["experiment"] == "sweep"):
        expected = swept[int(row["epoch"])]["test_accuracy"]
        assert float(row["test_accuracy_mean"]) == pytest.approx(expected["mean"])
        assert (
            float(row["test_accuracy_ci95"]) == pytest.approx(expected["ci95"])
            and row["seeds"] == "3"
        )
    runs = [
        json.loads((experiments / f"runs-{s}" / "summary.json").read_text())["history"]
        for s in (1, 2)
    ]
    last = next(r for r in rows if r["experiment"] == "runs" and r["epoch"] == "2")
    finals = [h[-1]["test_accuracy"] for h in runs]
    assert last["seeds"] == "2" and float(last["test_accuracy_mean"]) == pytest.approx(
        np.mean(finals)
    )
    assert float(last["test_accuracy_std"]) == pytest.approx(np.std(finals, ddof=1))

    markdown = (tmp_path / "table.md").read_text()
    assert markdown in printed and len(markdown.splitlines()) == 2 + len(names)
    runs_row = next(line for line in markdown.splitlines() if line.startswith("| runs |"))
    assert f"{100 * np.mean(finals):.2f} ± {100 * np.std(finals, ddof=1):.2f}" in runs_row

    latex = (tmp_path / "table.tex").read_text()
    assert re.findall(r"\\begin\{(\w+)\}", latex) == ["table", "tabularx"]
    assert re.findall(r"\\end\{(\w+)\}", latex) == ["tabularx", "table"]
    assert latex.count("{") - latex.count(r"\{") == latex.count("}") - latex.count(r"\}")
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(names) and all(line.count("&") == 5 for line in body)
    assert r"optimizer=\allowbreak{}adam layer\_sizes=\allowbreak{}784,\allowbreak{}16," in latex
    narrow, wide = ((tmp_path / f"table-{form}.tex").read_text() for form in ("narrow", "wide"))
    narrow_body = narrow.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    cells = [line.removesuffix(r" \\").split(" & ") for line in body]
    assert [line.removesuffix(r" \\").split(" & ") for line in narrow_body] == [
        [name, seeds, test] for name, seeds, _, _, test, _ in cells
    ]  # the experiment, its seeds and its test accuracy
    assert wide == latex.replace(r"{table}", r"{table*}")

    labels = [f"{name} (n={n})" for name, n in zip(names, (2, 3, 2, 2, 2, 2), strict=True)]
    width, height = figure_inches(labels)
    assert Image.open(tmp_path / "curves.png").size == (
        round(width * FIGURE_DPI),
        round(height * FIGURE_DPI),
    )
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")


def test_report_refuses_what_it_cannot_read(experiments, tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a run, sweep or grid folder" in capsys.readouterr().err
    interrupted = tmp_path / "stopped"
    shutil.copytree(experiments / "runs-1", interrupted)
    summary = json.loads((interrupted / "summary.json").read_text())
    (interrupted / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    assert main(["report", str(interrupted), "--out", str(tmp_path / "r")]) == 2
    assert "the run is interrupted" in capsys.readouterr().err
