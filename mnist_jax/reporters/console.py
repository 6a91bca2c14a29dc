"""Terminal output: a run's table (the seed notebook's, with timings) and progress bar; a sweep's
table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from mnist_jax.config import Config
from mnist_jax.records import EpochMetrics, Result
from mnist_jax.reporters.base import Reporter

_HEADER = "Epoch | Train accuracy | Test accuracy | Seconds | Examples/s"


def seed_table_legend(seeds) -> str:
    """The line above a sweep's or grid's table: the seeds, and what its cells show."""
    return f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); accuracy % as mean +- 95% CI (std)"


def seed_table_header(
    first_column: str, width: int, splits: Sequence[str], seconds: bool = False
) -> str:
    """The heading of a sweep's or grid's table: accuracy statistics over seeds per split."""
    columns = [f"{split.capitalize() + ' accuracy':21}" for split in splits] + (
        ["Seconds"] if seconds else []
    )
    return f"{first_column:{width}} | " + " | ".join(columns).rstrip()


def seed_table_row(
    label: str | int, width: int, row: dict, splits: Sequence[str], seconds: float | None = None
) -> str:
    """A row of that table: each split's accuracy % as mean +- 95% CI (std)."""
    cells = [
        f"{100 * row[k]['mean']:6.2f} +- {100 * row[k]['ci95']:4.2f} ({100 * row[k]['std']:4.2f})"
        for k in (f"{split}_accuracy" for split in splits)
    ]
    return f"{label:{width}} | " + " | ".join(
        cells + ([f"{seconds:7.2f}"] if seconds is not None else [])
    )


def _convolutions_line(forms: dict[str, int]) -> str:
    """How a model you bring has its convolutions given to XLA, and how to change it."""
    counts = ", ".join(f"{n} {form}" for form, n in forms.items())
    rewritten = any(not form.startswith("native") for form in forms)
    change = (
        "--conv-rewrite off keeps them as written"
        if rewritten
        else "--conv-rewrite on rewrites them"
    )
    return f"Convolutions: {counts} ({change})"


class ConsoleReporter(Reporter):
    """Prints one table row per epoch; draws a progress bar when `stream` is a terminal."""

    def __init__(self, stream: TextIO | None = None, progress: bool | None = None):
        self.stream = stream or sys.stdout
        self.progress = self.stream.isatty() if progress is None else progress
        self.steps_per_epoch = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def on_start(self, config: Config, environment: dict, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        model = {
            "mlp": f"{'-'.join(map(str, config.layer_sizes))} MLP",
            "cnn": f"cnn ({config.cnn_form} form)",
        }.get(config.model, config.model)
        deterministic = ", deterministic" if config.deterministic else ""
        self._print(
            f"Training {model} with {config.optimizer}, {_numerics(config)} "
            f"({config.matmul_precision} matmul precision{deterministic}), "
            f"batch {config.batch_size}, {config.num_epochs} epochs on "
            f"{environment['num_devices']} x {environment['device']}"
        )
        if environment.get("convolutions"):
            self._print(_convolutions_line(environment["convolutions"]))
        self._print(
            _HEADER.replace("| Test", "| Validation accuracy | Test")
            if config.validation_size
            else _HEADER
        )

    def on_batch(self, epoch: int, batches_done: int) -> None:
        if not self.progress:
            return
        width = 30
        filled = width * batches_done // self.steps_per_epoch
        bar = "#" * filled + "." * (width - filled)
        print(
            f"\r{epoch:5} [{bar}] {batches_done}/{self.steps_per_epoch}",
            end="",
            file=self.stream,
            flush=True,
        )

    def on_epoch(self, m: EpochMetrics) -> None:
        seconds = f"{m.epoch_seconds:7.2f}" if m.epoch_seconds else f"{'':7}"
        rate = f"{m.examples_per_second:10,.0f}" if m.examples_per_second else f"{'':10}"
        clear = "\r\033[K" if self.progress else ""
        validation = (
            "" if m.validation_accuracy is None else f"{100 * m.validation_accuracy:18.2f}% | "
        )
        self._print(
            f"{clear}{m.epoch:5} | {100 * m.train_accuracy:13.2f}% | {validation}"
            f"{100 * m.test_accuracy:12.2f}% | {seconds} | {rate}"
        )

    def on_end(self, result: Result) -> None:
        final = "Final" if result.status == "completed" else f"Run {result.status}; last"
        if not result.history:
            final = f"Run {result.status} before its first evaluation ended; no"
        cached = (
            f" ({result.compilations_from_cache} from the cache)"
            if result.compilations_from_cache
            else ""
        )
        accuracy = f" {100 * result.final_test_accuracy:.2f}%" if result.history else ""
        self._print(
            f"{final} test accuracy{accuracy}; compiled "
            f"{result.compilations} programs{cached} in {result.compile_seconds:.2f} s, "
            f"trained in {result.summary()['train_seconds']:.2f} s"
        )
        if result.best_epoch is not None:
            best = result.summary()["best"]
            self._print(
                f"Best epoch by validation accuracy: {best['epoch']} (validation "
                f"{100 * best['validation_accuracy']:.2f}%, test "
                f"{100 * best['test_accuracy']:.2f}%)"
            )

    def on_warning(self, message: str) -> None:
        print(f"mnist-jax: warning: {message}", file=sys.stderr, flush=True)


def _numerics(config: Config) -> str:
    """The run's dtype, saying what bfloat16's mixed precision keeps in float32."""
    if config.dtype == "bfloat16":
        return "bfloat16 mixed precision, float32 parameters"
    return config.dtype
