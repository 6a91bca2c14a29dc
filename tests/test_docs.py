"""The README and the docs pages: every figure rendered by the code from the committed results,
every flag table from the parser, every page in the site's navigation, and the committed results
complete and made with today's presets."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from benchmarks.recipes import PRESETS as TUNED_PRESETS
from benchmarks.recipes import grid_printout, grid_table
from mnist_jax.bench.settings import FULL_BENCH
from mnist_jax.config import Config, preset
from mnist_jax.models import as_run
from mnist_jax.report import latex_table, load_entries, markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "tools" / "render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)


@pytest.mark.parametrize(
    "page", render.PAGES, ids=[str(p.relative_to(ROOT)) for p in render.PAGES]
)
def test_every_rendered_block_is_what_the_code_renders(page):
    text = page.read_text()
    assert all(name in render.BLOCKS for name, _, _ in render.blocks(text))
    assert render.render_page(text) == text


def test_every_renderer_is_on_a_page_and_the_check_can_fail():
    used = {name for page in render.PAGES for name, _, _ in render.blocks(page.read_text())}
    assert used == set(render.BLOCKS)
    stale = "<!-- rendered: presets -->\n| a stale table |\n<!-- end -->\n"
    assert render.render_page(stale) != stale


def test_the_flag_tables_show_every_flag_of_every_command():
    from mnist_jax.cli import build_parser

    page = (ROOT / "docs" / "command-line.md").read_text()
    tables = {tuple(args) for name, args, _ in render.blocks(page) if name == "flags"}
    assert tables == {
        ("train",),
        ("sweep",),
        ("eval",),
        ("report",),
        ("bench",),
        ("bench", "compare"),
        ("prepare",),
    }
    train = next(content for name, args, content in render.blocks(page) if args == ["train"])
    flags = {
        flag
        for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help")
    }
    assert all(f"`{flag}`" in train for flag in flags)
    assert "| `--lr` | 0.001 | the learning rate (the peak of a schedule) |" in train


def test_every_page_is_in_the_sites_navigation():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))
    listed = {page for entry in config["nav"] for page in entry.values()}
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}


def test_the_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    commands = [line for line in lines if line.startswith(("python3 -m venv", "python -m pytest"))]
    assert commands == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
        "mnist-jax train --out runs/default",
        "python -m pytest",
    ]


# The committed results the pages render ----------------------------------------------------------


def test_the_committed_cnn_runs_are_complete():
    names = [Path(folder).name for folder in render.cnn_runs()]
    assert names == [
        "cnn-cosine-1",
        "cnn-cosine-2",
        "cnn-cosine-3",
        "cnn-run-1",
        "cnn-run-2",
        "cnn-run-3",
        "mlp-default",
    ]
    for folder in render.cnn_runs():
        summary = json.loads((Path(folder) / "summary.json").read_text())
        assert summary["status"] == "completed"
        # Today's preset, and Flax's recipe as it is: the preset at a constant learning rate
        # (settings added since a run was made take their defaults).
        if Path(folder).name.startswith(("cnn-cosine", "cnn-run")):
            schedule = "cosine" if Path(folder).name.startswith("cnn-cosine") else "constant"
            recorded = Config.from_dict(summary["config"])
            assert recorded == as_run_here("cnn", recorded).replace(
                seed=summary["config"]["seed"], schedule=schedule
            )
        assert [m["epoch"] for m in summary["history"]] == list(
            range(summary["config"]["num_epochs"] + 1)
        )


def test_the_committed_cnn_strong_runs_are_the_preset_as_it_is():
    folders = sorted((RESULTS / "cnn-strong").glob("cnn-strong-*"))
    assert [folder.name for folder in folders] == [f"cnn-strong-{n}" for n in (1, 2, 3)]
    seeds = []
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed"
        config = Config.from_dict(summary["config"])
        assert config == as_run_here("cnn-strong", config).replace(seed=config.seed)
        assert [m["epoch"] for m in summary["history"]] == list(range(config.num_epochs + 1))
        seeds.append(config.seed)
    assert seeds == [42, 43, 44]
    # The report pools exactly these runs, and its tables are the ones they give today.
    report = RESULTS / "cnn-strong-report"
    entries = load_entries([str(folder) for folder in folders])
    assert (report / "table.md").read_text() == markdown_table(entries)
    assert (report / "table.tex").read_text() == latex_table(entries)
    # The grid that chose it is the preset with its two augmentations, on the validation split.
    grid = json.loads((RESULTS / "recipes" / "tuning-cnn-strong" / "grid.json").read_text())
    strengths = ("augment_shift", "augment_rotation", "augment_scale")
    for cell in grid["cells"]:
        config = Config.from_dict(cell["config"])
        assert config == as_run_here("cnn-strong", config).replace(
            num_epochs=10, validation_size=10_000, **{k: getattr(config, k) for k in strengths}
        )
    assert [[cell["config"][k] for k in strengths] for cell in grid["cells"]] == [
        [2.0, 10.0, 0.1],
        [3.0, 15.0, 0.15],
    ]


def test_the_committed_augmentation_cost_is_the_strong_cnns_augmentation():
    saved = json.loads((RESULTS / "augment-cost" / "results.json").read_text())
    strong = preset("cnn-strong")
    assert saved["augmentation"] == {
        name: getattr(strong, name)
        for name in ("augment_shift", "augment_rotation", "augment_scale")
    }
    assert set(saved["presets"]) == {"cnn", "cnn-strong"}
    assert all(set(timings) == {"with", "without"} for timings in saved["presets"].values())


def test_the_committed_seed_run_is_the_seed_preset():
    summary = json.loads((RESULTS / "seed" / "summary.json").read_text())
    assert summary["status"] == "completed"
    recorded = Config.from_dict(summary["config"])
    assert recorded == as_run_here("seed", recorded)


def as_run_here(name: str, recorded: Config) -> Config:
    """The preset as a run on this CPU records it: the CNN's `auto` form as it ran (so the
    committed CNN runs are the presets' own forms). An MLP has no CNN layers; its runs, made
    before `auto`, recorded the default of then (or, older still, nothing), kept as `recorded`
    has it."""
    config = as_run(preset(name), "cpu")
    return config if config.model == "cnn" else config.replace(cnn_form=recorded.cnn_form)


TUNING = [
    "tuning-fast",
    "tuning-fast-2",
    "tuning-fast-3",
    "tuning-strong",
    "tuning-strong-2",
    "tuning-strong-3",
    "tuning-strong-4",
    "tuning-cnn",
    "tuning-speedrun",
    "tuning-speedrun-2",
    "tuning-speedrun-3",
    "tuning-cnn-strong",
]


@pytest.mark.parametrize("name", TUNING)
def test_each_printed_grid_table_is_what_the_code_renders_from_its_grid_json(name):
    printed = (RESULTS / "recipes" / f"{name}.txt").read_text().splitlines()
    rendered = grid_printout(name).splitlines()
    assert printed[: len(rendered)] == rendered
    cells = json.loads((RESULTS / "recipes" / name / "grid.json").read_text())["cells"]
    assert len(rendered) == 2 + len(cells)
    # The page's Markdown table: a row per cell, its label and figures those printed.
    rows = [line for line in grid_table(name).splitlines() if line.startswith("| `")]
    assert len(rows) == len(cells)
    for row, line in zip(rows, rendered[2:], strict=True):
        label, figures = line.split(" | ", 1)
        assert row.startswith(f"| `{label.strip()}` |")
        row_figures = row.split("` |", 1)[1]
        assert re.findall(r"\d+\.\d+", row_figures) == re.findall(r"\d+\.\d+", figures)


def test_the_presets_results_are_todays_presets():
    for name in TUNED_PRESETS:
        saved = json.loads((RESULTS / "recipes" / f"{name}-8-seeds" / "sweep.json").read_text())
        recorded = Config.from_dict(saved["config"])
        assert recorded == as_run_here(name, recorded) and len(saved["seeds"]) == 8
    assert (RESULTS / "adam-paper" / "training-cost.png").exists()


def test_the_startup_results_have_both_versions():
    saved = json.loads((RESULTS / "startup" / "results.json").read_text())
    assert {"train", "sweep", "grid"} <= set(saved["before"]) and "train, first run" in saved[
        "after"
    ]


def test_the_committed_benchmark_is_a_full_run():
    results = json.loads((RESULTS / "results.json").read_text())
    listed = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(FULL_BENCH).items()
    }
    assert results["settings"] == listed and results["config"]["num_epochs"] == FULL_BENCH.epochs
    assert results["fingerprint"]["versions"]["mnist-jax"] and results["fingerprint"]["git_commit"]
    assert (RESULTS / "results.md").read_text() == render.bench_markdown(results)
