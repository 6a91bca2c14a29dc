"""Grids, Optax optimizers and activations by name, and the paper report."""

import csv
import json
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mnist_jax import Config
from mnist_jax.cli import main
from mnist_jax.config import ConfigError
from mnist_jax.model import init_params, predict
from mnist_jax.plots import FIGURE_DPI, figure_inches
from mnist_jax.steps import Batch, init_state, make_steps
from mnist_jax.sweep import sweep

TINY = ["--layer-sizes", "784,16,10", "--batch-size", "32", "--eval-batch-size", "62"]


def test_relu_predict_matches_numpy():
    params = init_params(0, (784, 8, 10))
    x = np.random.default_rng(0).random((5, 784), np.float32)
    (W0, b0), (W1, b1) = [tuple(map(np.asarray, layer)) for layer in params]
    logits = np.maximum(x @ W0 + b0, 0) @ W1 + b1
    expected = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(predict(params, jnp.asarray(x), "relu"), expected, rtol=1e-5, atol=1e-6)


def test_sgd_by_name_takes_a_plain_gradient_step():
    config = Config(layer_sizes=(784, 8, 10), optimizer="sgd", learning_rate=0.01)
    state = init_state(config)
    rng = np.random.default_rng(1)
    batch = Batch(jnp.asarray(rng.integers(0, 256, (4, 28, 28, 1)), jnp.uint8), jnp.asarray([1, 2, 3, 4]),
                  jnp.ones(4, bool))
    new_state, _ = make_steps(config).train_step(state, batch)
    inputs = batch.images.reshape(4, -1).astype(jnp.float32) / 255
    grads = jax.grad(lambda p: -jnp.sum(jnp.take_along_axis(predict(p, inputs), batch.labels[:, None], 1)))(
        state.params)
    for new, old, grad in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params), jax.tree.leaves(grads)):
        np.testing.assert_allclose(new, old - 0.01 * grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("setting", [{"optimizer": "nope"}, {"optimizer": "GradientTransformation"},
                                     {"optimizer": "apply_updates"}, {"activation": "softmax"}])
def test_unknown_optimizers_and_activations_are_rejected(setting):
    with pytest.raises(ConfigError, match=list(setting)[0]):
        Config(**setting)


def test_grid_runs_every_cell_with_every_seed(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["sweep", "--seeds", "2", *TINY, "--epochs", "1", "--data-dir", data_dir, "--out", str(out),
                 "--grid", "lr", "0.01", "0.03", "--grid", "activation", "tanh", "relu"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "grid.json").read_text())
    assert saved["axes"] == {"learning_rate": [0.01, 0.03], "activation": ["tanh", "relu"]}
    assert [c["settings"] for c in saved["cells"]] == [
        {"learning_rate": lr, "activation": a} for lr in (0.01, 0.03) for a in ("tanh", "relu")]
    for cell in saved["cells"]:
        settings = cell["settings"]
        assert f"learning_rate={settings['learning_rate']} activation={settings['activation']}" in printed
        config = Config.from_dict(cell["config"])
        assert (config.learning_rate, config.activation) == tuple(cell["settings"].values())
        alone = sweep(config, [42, 43])  # the cell equals a sweep of its own config
        np.testing.assert_allclose([cell["per_seed"][s][-1]["test_accuracy"] for s in ("42", "43")],
                                   alone.histories[:, -1, 1], atol=1e-12)


@pytest.mark.parametrize("grid, message", [(["nope", "1"], "'nope' is not a setting"),
                                           (["batch_size", "32", "x"], "invalid literal"),
                                           (["activation", "tanh", "cosh"], "activation must be one of")])
def test_bad_grids_are_refused_before_any_work(data_dir, tmp_path, capsys, grid, message):
    assert main(["sweep", "--seeds", "2", *TINY, "--data-dir", data_dir, "--out", str(tmp_path), "--grid", *grid]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "grid.json").exists()


@pytest.fixture(scope="module")
def experiments(data_dir, tmp_path_factory):
    """Two single-seed runs of one config, a sweep and a grid."""
    root = tmp_path_factory.mktemp("experiments")
    common = [*TINY, "--epochs", "2", "--data-dir", data_dir]
    for seed in (1, 2):
        assert main(["train", *common, "--seed", str(seed), "--quiet", "--out", str(root / f"runs-{seed}")]) == 0
    assert main(["sweep", "--seeds", "3", *common, "--out", str(root / "sweep")]) == 0
    assert main(["sweep", "--seeds", "2", *common, "--out", str(root / "grid"),
                 "--grid", "optimizer", "adam", "sgd", "--grid", "layer_sizes", "784,16,10", "784,8,8,10"]) == 0
    return root


def test_report_writes_tables_and_figures_that_parse(experiments, tmp_path, capsys):
    dirs = [str(experiments / name) for name in ("runs-1", "runs-2", "sweep", "grid")]
    assert main(["report", *dirs, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out

    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    names = ["runs", "sweep"] + [f"grid: optimizer={o} layer_sizes={s}" for o in ("adam", "sgd")
                                 for s in ("784,16,10", "784,8,8,10")]
    assert list(dict.fromkeys(r["experiment"] for r in rows)) == names and len(rows) == len(names) * 3
    swept = json.loads((experiments / "sweep" / "sweep.json").read_text())["statistics"]
    for row in (r for r in rows if r["experiment"] == "sweep"):
        expected = swept[int(row["epoch"])]["test_accuracy"]
        assert float(row["test_accuracy_mean"]) == pytest.approx(expected["mean"])
        assert float(row["test_accuracy_ci95"]) == pytest.approx(expected["ci95"]) and row["seeds"] == "3"
    runs = [json.loads((experiments / f"runs-{s}" / "summary.json").read_text())["history"] for s in (1, 2)]
    last = next(r for r in rows if r["experiment"] == "runs" and r["epoch"] == "2")
    finals = [h[-1]["test_accuracy"] for h in runs]
    assert last["seeds"] == "2" and float(last["test_accuracy_mean"]) == pytest.approx(np.mean(finals))
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
        document = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex + "\\end{document}\n"
        (tmp_path / "doc.tex").write_text(document)
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, check=True,
                       capture_output=True)

    labels = [f"{name} (n={n})" for name, n in zip(names, (2, 3, 2, 2, 2, 2))]
    width, height = figure_inches(labels)
    assert Image.open(tmp_path / "curves.png").size == (round(width * FIGURE_DPI), round(height * FIGURE_DPI))
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
