"""The notebooks run top to bottom in a fresh kernel, and are stored without outputs."""

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import child_env, suite_cache_env

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SEED_TABLE = {
    0: (9.93, 9.62),
    1: (94.01, 93.99),
    2: (96.08, 95.63),
    3: (97.19, 96.50),
    4: (97.82, 96.92),
    5: (98.27, 97.10),
}


def execute(name: str, **env: str) -> nbformat.NotebookNode:
    """Runs the notebook in a fresh kernel (this interpreter's, in `child_env`) with `env` set;
    errors raise. The kernel keeps its compiled programs in this worker's cache (conftest.py),
    which is idle while it runs."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute(env=child_env(**suite_cache_env(), PATH=path, **env))
    return notebook


def text_of(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def images_in(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def seed_rows(text: str) -> dict[int, tuple[float, float]]:
    """The seed preset's rows of the side-by-side table: epoch -> (train %, test %)."""
    rows = re.findall(r"^\s*(\d+) \| +([\d.]+)% / +([\d.]+)% +\|", text, re.MULTILINE)
    return {int(epoch): (float(train), float(test)) for epoch, train, test in rows}


@pytest.mark.parametrize("name", ["mnist_jax.ipynb", "devices.ipynb", "adam_paper.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_main_notebook_runs_on_small_data(data_dir):
    notebook = execute("mnist_jax.ipynb", TFDS_DATA_DIR=data_dir, MNIST_JAX_NOTEBOOK_EPOCHS="1")
    text = text_of(notebook)
    assert "train (300, 28, 28, 1) uint8 | test (100, 28, 28, 1)" in text
    assert sorted(seed_rows(text)) == [0, 1]
    assert re.search(r"final test accuracy [\d.]+%; files: \[.*'summary.json'", text)
    assert re.search(r"\d+ of 100 test digits misclassified", text)
    assert re.search(r"\| optimizers: optimizer=adam \| 2 \| 1 \| [\d.]+ ± [\d.]+ \|", text)
    assert re.search(r"\| optimizers: optimizer=rmsprop \| 2 \| 1 \| [\d.]+ ± [\d.]+ \|", text)
    # the digits, the curves, the grid's report, the confusion matrix
    assert images_in(notebook) >= 4


@pytest.mark.slow
def test_the_main_notebook_reproduces_the_seed_table(real_data_dir):
    text = text_of(execute("mnist_jax.ipynb", TFDS_DATA_DIR=real_data_dir))
    assert "first-batch objective 593.5535733141" in text
    rows = seed_rows(text)
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    for epoch, expected in SEED_TABLE.items():
        # The printed values are rounded to 2 decimals; the run's own match the table to 0.005.
        assert rows[epoch] == pytest.approx(expected, abs=0.01 + 1e-9), f"epoch {epoch}"


@pytest.mark.slow
def test_the_devices_notebook_runs_the_benchmarks(data_dir):
    notebook = execute("devices.ipynb", TFDS_DATA_DIR=data_dir, MNIST_JAX_NOTEBOOK_QUICK="1")
    text = text_of(notebook)
    assert re.search(r"^cpu: \d+ x cpu", text, re.MULTILINE)
    assert "'chart.png', 'results.json', 'results.md', 'sweeps.png'" in text
    assert re.search(r"^cpu +\| .* \| +[\d.]+ \|  1\.00x \|", text, re.MULTILINE)
    assert images_in(notebook) == 2


def test_the_adam_paper_notebook_runs_the_whole_procedure_on_small_data(data_dir, tmp_path):
    results = tmp_path / "adam-paper"
    notebook = execute(
        "adam_paper.ipynb",
        TFDS_DATA_DIR=data_dir,
        MNIST_JAX_NOTEBOOK_QUICK="1",
        MNIST_JAX_ADAM_PAPER_DIR=str(results),
    )
    text = text_of(notebook)
    optimizers = ["adam", "adagrad", "rmsprop", "sgd", "adadelta"]
    # Each optimizer tuned in each panel (at one rate), then its chosen rate run: 20 trainings.
    assert sum(
        bool(re.search(rf"^{name} +[\d.e-]+ +trained in [\d.]+ s$", line))
        for line in text.splitlines()
        for name in optimizers
    ) == 2 * (5 + 5)
    assert sorted(p.name for p in results.iterdir()) == [
        "a",
        "a-tuning",
        "b",
        "b-tuning",
        "training-cost.png",
    ]
    names = ["Adam", "AdaGrad", "RMSProp", "SGD, Nesterov momentum", "AdaDelta"]
    for panel in ("a", "b"):
        order = re.search(
            rf"panel \({panel}\), lowest final training cost first: (.*)$", text, re.MULTILINE
        ).group(1)
        # one comma is SGD's
        assert all(order.count(name) == 1 for name in names) and order.count(", ") == len(names)
    assert images_in(notebook) == 1
    markdown = "".join(
        output.get("data", {}).get("text/markdown", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert markdown.count("learning rate: training cost after 1 epochs") == 2
    assert all(
        f"| (a) | {name} |" in markdown and f"| (b) | {name} |" in markdown for name in names
    ), markdown
