"""The figures on the docs pages and in the README, rendered from the committed results.

A page marks each rendered block with `<!-- rendered: NAME ARGS -->` and `<!-- end -->`;
between them stands what `BLOCKS[NAME](*ARGS)` returns, never a hand-copied number.
`python docs/tools/render.py` rewrites every block; `python docs/tools/render.py --check` (and a
test) fails if a committed page differs from what the code renders.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the benchmarks' renderers, as `python -m` would find them

from benchmarks import adam_paper, augment_cost, conv_forms, conv_rewrite, recipes, startup  # noqa: E402
from mnist_jax.bench.render import markdown as bench_markdown  # noqa: E402
from mnist_jax.bench.render import summary_line  # noqa: E402
from mnist_jax.cli import flag_table  # noqa: E402
from mnist_jax.pipelines import pacing  # noqa: E402
from mnist_jax.report import load_entries, markdown_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- rendered: ([^>]*?) -->\n)(.*?)(<!-- end -->)", re.DOTALL)


def cnn_runs() -> list[str]:
    """The committed CNN and MLP baseline runs
    (`mnist-jax train --out benchmarks/results/cnn/NAME`)."""
    return sorted(str(path.parent) for path in (RESULTS / "cnn").glob("*/summary.json"))


def cnn_timing() -> str:
    """The `cnn` preset's and the MLP's median training seconds per epoch over their committed
    runs."""

    def median_epoch(prefix: str) -> float:
        summaries = [
            json.loads(Path(folder, "summary.json").read_text())
            for folder in cnn_runs()
            if Path(folder).name.startswith(prefix)
        ]
        return statistics.median(m["epoch_seconds"] for s in summaries for m in s["history"][1:])

    return (
        f"Training took a median {median_epoch('cnn-cosine'):.1f} s per epoch for the `cnn` "
        f"preset and {median_epoch('mlp'):.2f} s for the default MLP on this 2-core CPU "
        "(each epoch's training seconds, evaluation apart, over the preset's three runs).\n"
    )


def seed_run() -> str:
    """The committed seed-preset run
    (`mnist-jax train --preset seed --out benchmarks/results/seed`), printed by the console
    reporter from its summary.json."""
    import io

    from mnist_jax.config import Config
    from mnist_jax.records import EpochMetrics, Result
    from mnist_jax.reporters import ConsoleReporter

    summary = json.loads((RESULTS / "seed" / "summary.json").read_text())
    history = [EpochMetrics(**m) for m in summary["history"]]
    result = Result(
        Config.from_dict(summary["config"]),
        None,
        history,
        summary["compile_seconds"],
        summary["device"],
        summary["num_devices"],
        summary["versions"],
        compilations=summary["compilations"],
        compilations_from_cache=summary["compilations_from_cache"],
    )
    stream = io.StringIO()
    reporter = ConsoleReporter(stream, progress=False)
    reporter.on_start(
        result.config, {"device": result.device, "num_devices": result.num_devices}, 0
    )
    reporter.on_history(history)
    reporter.on_end(result)
    return "```console\n$ mnist-jax train --preset seed\n" + stream.getvalue() + "```\n"


def bench_results() -> dict:
    return json.loads((RESULTS / "results.json").read_text())


BLOCKS: dict[str, Callable[..., str]] = {
    "presets": recipes.headline,
    "seed-run": seed_run,
    "flags": lambda *command: flag_table(" ".join(command)),
    "cnn-report": lambda: markdown_table(load_entries(cnn_runs())),
    "cnn-strong-report": lambda: markdown_table(
        load_entries(sorted(str(p) for p in (RESULTS / "cnn-strong").glob("cnn-strong-*")))
    ),
    "cnn-strong-goals": lambda: recipes.strong_cnn_goals(),
    "cnn-timing": cnn_timing,
    "tuning": lambda name: recipes.grid_table(name),
    "recipe-presets": lambda: recipes.render(),
    "preset-result": lambda name: recipes.preset_result(name),
    "adam-tuning": lambda panel: adam_paper.tuning_table(panel),
    "adam-length": lambda: adam_paper.length(),
    "adam-results": lambda: adam_paper.results_table(),
    "adam-agreement": lambda: adam_paper.agreement(),
    "adam-order": lambda: "".join(
        f"- Panel ({panel}), lowest final training cost first: {adam_paper.order(panel)}.\n"
        for panel in adam_paper.PANELS
    ),
    "startup": lambda: startup.render(),
    "stop-bound": lambda: (
        f"**within {pacing.STOP_SECONDS:g} s, plus the time of one step**, whatever the model and "
        f"the epoch's length: every compiled call is sized to last about "
        f"{pacing.CALL_SECONDS:g} s, which leaves the rest for the checkpoint.\n"
    ),
    "conv-forms": lambda: conv_forms.render(),
    "conv-rewrite": lambda: conv_rewrite.render(),
    "augment-cost": lambda: augment_cost.render(),
    "bench": lambda: bench_markdown(bench_results()),
    "bench-summary": lambda: summary_line(bench_results()) + "\n",
}


def blocks(text: str) -> list[tuple[str, list[str], str]]:
    """Each rendered block of a page: its name, its arguments and its committed content."""
    return [
        (spec.split()[0], spec.split()[1:], content) for _, spec, content, _ in BLOCK.findall(text)
    ]


def render_page(text: str) -> str:
    """The page with every block rendered afresh."""

    def render(match: re.Match) -> str:
        name, *args = match.group(2).split()
        return match.group(1) + BLOCKS[name](*args) + match.group(4)

    return BLOCK.sub(render, text)


def main(argv: list[str]) -> int:
    stale = []
    for page in PAGES:
        text = page.read_text()
        rendered = render_page(text)
        if rendered != text:
            stale.append(page.relative_to(ROOT))
            if "--check" not in argv:
                page.write_text(rendered)
    verb = "differ from what the code renders" if "--check" in argv else "rewritten"
    print(f"{len(stale)} pages {verb}{': ' if stale else ''}{', '.join(map(str, stale))}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
