"""Benchmark results from several machines side by side: one Markdown table and one chart, every
row's time as a ratio to a baseline result's, refused across different configurations."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from mnist_jax.bench.render import (
    ABSENT,
    machine,
    machine_name,
    median,
    numerics,
    read_results,
    row_dtype,
    time_to_target,
    timed_rows,
)
from mnist_jax.bench.settings import FULL_BENCH
from mnist_jax.config import Config
from mnist_jax.errors import ConfigError, InputError
from mnist_jax.runs.storage import write_atomic

# Where a result was made, not what was measured: allowed to differ between machines.
_WHERE = ("data_dir",)


def differences(a: dict, b: dict) -> list[str]:
    """The measured settings (the model's config and the benchmark's own) in which two results
    differ. A setting newer than a result counts at its default there, as `Config.from_dict` reads
    it."""
    found = []
    defaults = {
        "config": Config().to_dict(),
        "settings": json.loads(json.dumps(dataclasses.asdict(FULL_BENCH))),
    }
    for part in ("config", "settings"):
        left, right = defaults[part] | a[part], defaults[part] | b[part]
        for key in sorted(set(left) | set(right)):
            if key not in _WHERE and left.get(key, "missing") != right.get(key, "missing"):
                found.append(
                    f"{part}.{key}: {left.get(key, 'missing')} against {right.get(key, 'missing')}"
                )
    return found


def result_names(named: dict[str, dict]) -> dict[str, str]:
    """Each result file's name in the table and the chart: its machine (`machine_name`), with the
    file beside it only where two results share a machine."""
    machines = {path: machine_name(results["fingerprint"]) for path, results in named.items()}
    shared = {name for name in machines.values() if list(machines.values()).count(name) > 1}
    return {
        path: f"{name} ({path})" if name in shared else name for path, name in machines.items()
    }


def _baseline_row(baseline: dict, platform: str, implementation: str) -> dict | None:
    """The baseline's row for the implementation: on the same platform where it has one, else on
    its default platform (the last it benchmarked)."""
    platforms = list(baseline["platforms"])
    on = platform if platform in platforms else platforms[-1]
    return next(
        (t for p, name, t in timed_rows(baseline) if p == on and name == implementation), None
    )


def comparison_rows(named: dict[str, dict], baseline: str) -> list[dict]:
    """Every timed row of every result, with its time as a ratio to the baseline's."""
    rows = []
    for label, results in named.items():
        precision = numerics(results)[1]
        for platform, implementation, timing in timed_rows(results):
            seconds = median(timing)
            if seconds is None:
                continue
            reference = median(_baseline_row(named[baseline], platform, implementation))
            target, reached = (
                time_to_target(timing) if "compile_seconds" in timing else (None, None)
            )
            rows.append(
                {
                    "result": label,
                    "machine": machine(results["fingerprint"]),
                    "platform": platform,
                    "implementation": implementation,
                    "seconds": seconds,
                    "examples_per_second": timing.get("examples_per_second"),
                    "compile_seconds": (timing.get("compile_seconds") or {}).get("median"),
                    "target_accuracy": target,
                    "time_to_target": (reached or {}).get("median"),
                    "final_test_accuracy": (timing.get("final_test_accuracy") or {}).get("median"),
                    "dtype": row_dtype(results, implementation),
                    "matmul_precision": precision,
                    "vs_baseline": seconds / reference if reference else None,
                }
            )
    return rows


def _cell(value, form: str) -> str:
    return ABSENT if value is None else format(value, form)


def _target_cell(row: dict) -> str:
    """Seconds to the row's target test accuracy, with the target; absent for a reference."""
    if row["target_accuracy"] is None:
        return ABSENT
    seconds = _cell(row["time_to_target"], ".2f").replace(ABSENT, "not reached")
    return f"{seconds} ({100 * row['target_accuracy']:.0f}%)"


def comparison_markdown(
    named: dict[str, dict],
    baseline: str,
    rows: list[dict],
    mismatches: dict[str, list],
    files: dict[str, str] | None = None,
) -> str:
    """compare.md: each result's machine in full (and its file), then the table of rows."""
    files = files or {}
    lines = [
        f"Seconds per epoch (median of each result's timed runs). `vs {baseline}` is each row's "
        "time over the baseline's for the same implementation, on the same platform where the "
        "baseline has it, else on its default platform: below 1 is faster.",
        "",
    ]
    for label, results in named.items():
        fp = results["fingerprint"]
        versions = ", ".join(
            f"{name} {version}" for name, version in fp["platform_versions"].items()
        )
        source = f" (`{files[label]}`)" if label in files else ""
        lines.append(
            f"- **{label}**{source}: {machine(fp)}; jax {fp['versions'].get('jax')}; {versions}; "
            f"commit {(fp['git_commit'] or 'none')[:7]}; {fp['date'][:10]}; "
            f"XLA_FLAGS='{fp['xla_flags']}'"
        )
    lines += [
        "",
        "| result | platform | implementation | dtype, matmul precision | s/epoch | examples/s "
        f"| compile s | s to target test accuracy | final test % | vs {baseline} |",
        "|" + " --- |" * 10,
    ]
    lines += [
        f"| {row['result']} | {row['platform']} | {row['implementation']} | {row['dtype']}, "
        f"{row['matmul_precision']} | {row['seconds']:.3f} "
        f"| {_cell(row['examples_per_second'], ',.0f')} | {_cell(row['compile_seconds'], '.2f')} "
        f"| {_target_cell(row)} "
        f"| {_cell(row['final_test_accuracy'] and 100 * row['final_test_accuracy'], '.2f')} | "
        f"{_cell(row['vs_baseline'], '.2f')} |"
        for row in rows
    ]
    for label, found in mismatches.items():
        lines += [
            "",
            f"Compared despite different settings (--allow-mismatch): `{label}` against "
            f"`{baseline}`:",
            "",
        ]
        lines += [f"- {difference}" for difference in found]
    return "\n".join(lines) + "\n"


def compare(
    paths: Sequence[str], out: str, baseline: str | None = None, allow_mismatch: bool = False
) -> str:
    """Writes compare.md and compare.png in `out` for the results.json files at `paths` (the
    first is the baseline unless `baseline` names one of them); returns the Markdown. Results of
    different settings are refused (ConfigError naming them) unless `allow_mismatch`."""
    baseline = baseline or paths[0]
    if baseline not in paths:
        raise InputError(f"--baseline {baseline} is not one of the results compared")
    try:
        named = {path: read_results(path) for path in paths}
    except (OSError, ValueError) as e:
        raise InputError(str(e)) from None
    mismatches = {
        path: found for path in paths if (found := differences(named[baseline], named[path]))
    }
    if mismatches and not allow_mismatch:
        raise ConfigError(
            "results of different settings, "
            + "; ".join(
                f"{path} against {baseline}: " + ", ".join(found)
                for path, found in mismatches.items()
            )
            + " (--allow-mismatch compares them anyway)"
        )
    names = result_names(named)
    by_name = {names[path]: results for path, results in named.items()}
    rows = comparison_rows(by_name, names[baseline])
    text = comparison_markdown(
        by_name,
        names[baseline],
        rows,
        {names[p]: found for p, found in mismatches.items()},
        {name: path for path, name in names.items()},
    )
    baseline = names[baseline]
    from mnist_jax.bench.charts import compare_chart

    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "compare.md"), text.encode())
    compare_chart(rows, baseline, os.path.join(out, "compare.png"))
    return text
