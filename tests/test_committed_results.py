"""The README's CNN baseline figures are what the code renders from the committed runs."""

import json
import statistics
from pathlib import Path

from mnist_jax.report import load_entries, markdown_table

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
    assert names == ["cnn-run-1", "cnn-run-2", "cnn-run-3", "mlp-default"]
    for folder in run_folders():
        summary = json.loads((Path(folder) / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert [m["epoch"] for m in summary["history"]] == list(range(summary["config"]["num_epochs"] + 1))


def test_the_readme_shows_the_table_and_timings_rendered_from_them():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table(load_entries(run_folders())) in readme
    assert (f"median {epoch_seconds('cnn'):.1f} s per epoch for the CNN and {epoch_seconds('mlp'):.2f} s for "
            "the default MLP") in readme
