"""MkDocs hooks: the committed results' figures (`benchmarks/results/**.png`) join the site as
`results/...`, so the pages show the very files the code wrote, with no copy kept in `docs/`."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def on_files(files: Files, config) -> Files:
    for path in sorted((BENCHMARKS / "results").rglob("*.png")):
        files.append(
            File(
                str(path.relative_to(BENCHMARKS)),
                str(BENCHMARKS),
                config["site_dir"],
                config["use_directory_urls"],
            )
        )
    return files
