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
    assert re.findall(r"\\begin\{(\w+)\}", latex) == ["table", "tabular"]
    assert re.findall(r"\\end\{(\w+)\}", latex) == ["tabular", "table"]
    assert latex.count("{") - latex.count(r"\{") == latex.count("}") - latex.count(r"\}")
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(names) and all(line.count("&") == 5 for line in body)
    assert "optimizer=adam layer\\_sizes=784,16,10" in latex
    if shutil.which("pdflatex"):
        document = (
            "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
            + latex
            + "\\end{document}\n"
        )
        (tmp_path / "doc.tex").write_text(document)
        subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "doc.tex"],
            cwd=tmp_path,
            check=True,
            timeout=120,
            capture_output=True,
        )

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
