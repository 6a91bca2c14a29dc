"""The README's figures (the CNN baseline, the recipes) are what the code renders from the committed results."""

import json
import statistics
from pathlib import Path

import pytest

from mnist_jax.config import preset, settings_label
from mnist_jax.console import seed_table_header, seed_table_row
from mnist_jax.report import load_entries, markdown_table
from mnist_jax.results import SPLITS

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "results" / "cnn"


def run_folders() -> list[str]:
    return sorted(str(p.parent) for p in RUNS.glob("*/summary.json"))


def epoch_seconds(prefix: str) -> float:
    """The median training seconds per epoch over the committed runs whose folder starts with `prefix`."""
    summaries = [json.loads((RUNS / Path(folder).name / "summary.json").read_text()) for folder in run_folders()
                 if Path(folder).name.startswith(prefix)]
    return statistics.median(m["epoch_seconds"] for s in summaries for m in s["history"][1:])


def test_the_committed_runs_are_complete():
    names = [Path(folder).name for folder in run_folders()]
    assert names == ["cnn-cosine-1", "cnn-cosine-2", "cnn-cosine-3", "cnn-run-1", "cnn-run-2", "cnn-run-3",
                     "mlp-default"]
    for folder in run_folders():
        summary = json.loads((Path(folder) / "summary.json").read_text())
        assert summary["status"] == "completed"
        if Path(folder).name.startswith("cnn-cosine"):  # today's preset
            assert summary["config"] == preset("cnn").replace(seed=summary["config"]["seed"]).to_dict()
        assert [m["epoch"] for m in summary["history"]] == list(range(summary["config"]["num_epochs"] + 1))


def test_the_readme_shows_the_table_and_timings_rendered_from_them():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table(load_entries(run_folders())) in readme
    assert (f"median {epoch_seconds('cnn'):.1f} s per epoch for the CNN and {epoch_seconds('mlp'):.2f} s for "
            "the default MLP") in readme


# The recipes: the grids that chose the presets, and the presets' 8-seed results -----------------

RECIPES = ROOT / "benchmarks" / "results" / "recipes"
TUNING = ["tuning-fast", "tuning-fast-2", "tuning-fast-3", "tuning-strong", "tuning-strong-2", "tuning-strong-3",
          "tuning-strong-4", "tuning-cnn"]


@pytest.mark.parametrize("name", TUNING + ["adam-paper"])
def test_each_printed_grid_table_is_its_grid_json_and_in_the_readme(name):
    """The committed printout is what the CLI renders from the committed grid.json, row for row."""
    printed = (RECIPES / f"{name}.txt").read_text()
    saved = json.loads((RECIPES / name / "grid.json").read_text())
    splits = [s for s in SPLITS if all(f"{s}_accuracy" in cell["statistics"][-1] for cell in saved["cells"])]
    labels = [settings_label(cell["settings"]) for cell in saved["cells"]]
    width = max(map(len, labels))
    rows = [seed_table_row(label, width, cell["statistics"][-1], splits, cell["seconds"])
            for label, cell in zip(labels, saved["cells"])]
    lines = printed.splitlines()
    assert lines[1] == seed_table_header("Cell", width, splits, seconds=True)
    assert lines[2:2 + len(rows)] == rows
    if name in TUNING:
        assert "\n".join(lines[:2 + len(rows)]) in (ROOT / "README.md").read_text()


def test_the_readme_shows_the_presets_results_rendered_from_the_committed_files():
    from benchmarks.recipes import PRESETS, render

    for preset_name in PRESETS:
        saved = json.loads((RECIPES / f"{preset_name}-8-seeds" / "sweep.json").read_text())
        assert saved["config"] == preset(preset_name).to_dict() and len(saved["seeds"]) == 8
    assert render() in (ROOT / "README.md").read_text()


def test_the_readme_shows_the_adam_paper_report_rendered_from_its_grid():
    assert markdown_table(load_entries([str(RECIPES / "adam-paper")])) in (ROOT / "README.md").read_text()
    assert (RECIPES / "adam-paper-report" / "curves.png").exists()


# Start-up: before and after -----------------------------------------------------------------------

def test_the_startup_tables_are_rendered_from_the_committed_results():
    from benchmarks.startup import RESULTS, ratios, render

    saved = json.loads((RESULTS / "results.json").read_text())
    assert {"train", "sweep", "grid"} <= set(saved["before"]) and "train, first run" in saved["after"]
    assert render() in (ROOT / "benchmarks" / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert all(line in readme for line in ratios(saved))


# The benchmark: results.json made by `python -m benchmarks.run`, rendered into both READMEs --------

def test_the_benchmark_tables_are_what_the_code_renders_from_the_committed_results():
    import dataclasses

    from mnist_jax.bench_report import default_run, markdown, summary_line
    from mnist_jax.config import FULL_BENCH

    results = json.loads((ROOT / "benchmarks" / "results" / "results.json").read_text())
    listed = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(FULL_BENCH).items()}
    assert results["settings"] == listed and results["config"]["num_epochs"] == FULL_BENCH.epochs
    assert results["fingerprint"]["versions"]["mnist-jax"] and results["fingerprint"]["git_commit"]
    rendered = markdown(results)
    assert (ROOT / "benchmarks" / "results" / "results.md").read_text() == rendered
    assert rendered in (ROOT / "benchmarks" / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert summary_line(results) in readme and f"trains the default model ({default_run(results)})" in readme
