"""The experiments a report holds: run, sweep and grid folders read back, runs of one config
pooled."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from mnist_jax.config import settings_label
from mnist_jax.errors import InputError
from mnist_jax.records import SPLITS, metric_names
from mnist_jax.stats import statistics

_IGNORED = ("seed", "data_dir")  # runs differing only in these are seeds of one experiment


@dataclass
class Entry:
    """One experiment: per epoch, statistics over its seeds of each metric."""

    name: str
    sources: list[str]
    # [{"epoch": e, "<split>_<accuracy|loss>": {"mean", "std", "ci95", "n"}}]
    statistics: list[dict]

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
        raise InputError(f"{path}: not valid JSON: {e}") from None


def _run_statistics(histories: list[list[dict]]) -> list[dict]:
    """Statistics over runs (each a summary.json history) of every metric they all report."""
    metrics = metric_names([s for s in SPLITS if histories[0][0].get(f"{s}_accuracy") is not None])
    return [
        {"epoch": epoch, **{m: statistics([h[epoch][m] for h in histories]) for m in metrics}}
        for epoch in range(len(histories[0]))
    ]


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
            entries += [
                Entry(f"{name}: {settings_label(cell['settings'])}", [path], cell["statistics"])
                for cell in saved["cells"]
            ]
        elif os.path.exists(os.path.join(path, "sweep.json")):
            entries.append(
                Entry(name, [path], _read_json(os.path.join(path, "sweep.json"))["statistics"])
            )
        elif os.path.exists(os.path.join(path, "summary.json")):
            summary = _read_json(os.path.join(path, "summary.json"))
            if summary["status"] != "completed":
                advice = "; resume it first" if summary["status"] == "interrupted" else ""
                raise InputError(f"{path}: the run is {summary['status']}, not completed{advice}")
            key = json.dumps(
                {k: v for k, v in summary["config"].items() if k not in _IGNORED}, sort_keys=True
            )
            if key not in runs:
                entries.append(key)
            runs.setdefault(key, []).append((path, summary["history"]))
        else:
            raise InputError(
                f"{path}: not a run, sweep or grid folder (no summary.json, sweep.json or "
                "grid.json)"
            )
    return [_pooled(runs[entry]) if isinstance(entry, str) else entry for entry in entries]


def _pooled(runs: list[tuple[str, list[dict]]]) -> Entry:
    """Runs of one config as one entry, named by their folders' common prefix."""
    names = [os.path.basename(os.path.normpath(path)) for path, _ in runs]
    common = os.path.commonprefix(names).rstrip("-_.") if len(names) > 1 else names[0]
    return Entry(
        common or names[0],
        [path for path, _ in runs],
        _run_statistics([history for _, history in runs]),
    )
