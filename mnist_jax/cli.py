"""The `mnist-jax` command: prepare, train, sweep, report, eval and bench."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from mnist_jax.bench.settings import QUICK_BENCH, BenchSettings
from mnist_jax.config import PRESETS, Config, field_type, preset, read_config_file
from mnist_jax.errors import ConfigError, InputError, MnistJaxError
from mnist_jax.runs.rundir import RunDir

# Shorter flag names for the most used settings; the rest are --field-name.
_FLAG_NAMES = {"num_epochs": "--epochs", "learning_rate": "--lr"}


def _help(text: str) -> str:
    """A help text as argparse takes it (`%` is its format character)."""
    return text.replace("%", "%%")


def _shown(value) -> str:
    """A default as a flag would be written: lists comma-separated, None as `unset`."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _field_type(f: dataclasses.Field) -> Callable[[str], object]:
    """The function that turns a command-line word into the field's value."""
    kind = field_type(f)
    return {tuple: _int_list, bool: _bool}.get(kind, kind)


def _flag(name: str) -> str:
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


# Settings a sweep has no use for: it writes no checkpoints and trains on the `device` path (its
# models spread over the devices).
_NOT_FOR_SWEEPS = ("checkpoint_every", "keep_checkpoints", "pipeline", "batches_per_chunk")


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per Config field but those in `skip`, its help the field's; unset flags keep the
    preset's value."""
    parser.add_argument("--preset", help=f"base settings: {', '.join(PRESETS)} (default: default)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or JSON file of settings (and a preset); flags override it",
    )
    for f in (f for f in dataclasses.fields(Config) if f.name not in skip):
        help = _help(f"{f.metadata['help']} (default: {_shown(f.default)})")
        kwargs = {"dest": f.name, "default": None, "help": help}
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _field_type(f)
        parser.add_argument(_flag(f.name), **kwargs)


def _grid_axes(specs: list[list[str]]) -> dict:
    """`--grid SETTING VALUE...` arguments as {field name: values}; `--grid A/B VA/VB ...` as
    {(A, B): [(VA, VB), ...]}, the settings varied together."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    by_flag = {_flag(name).lstrip("-"): name for name in fields} | {name: name for name in fields}
    axes = {}
    for setting, *words in specs:
        names = [
            by_flag.get(part) or by_flag.get(part.replace("_", "-")) for part in setting.split("/")
        ]
        if None in names:
            raise ConfigError(
                f"--grid: {setting.split('/')[names.index(None)]!r} is not a setting"
            )
        if not words:
            raise ConfigError(f"--grid {setting}: give at least one value")
        try:
            values = [_linked_values(word, [fields[name] for name in names]) for word in words]
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise ConfigError(f"--grid {setting}: {e}") from None
        if len(names) == 1:
            axes[names[0]] = [value for (value,) in values]
        else:
            axes[tuple(names)] = values
    return axes


def _linked_values(word: str, settings: list[dataclasses.Field]) -> tuple:
    """One grid value per setting from `word` (split at `/` for several); `none` unsets an
    optional setting."""
    parts = word.split("/") if len(settings) > 1 else [word]
    if len(parts) != len(settings):
        raise ValueError(f"{word!r} gives {len(parts)} values for {len(settings)} settings")
    return tuple(
        None if f.default is None and part.lower() == "none" else _field_type(f)(part)
        for f, part in zip(settings, parts, strict=True)
    )


def _config_from_args(args: argparse.Namespace) -> Config:
    """The preset, then the config file, then the flags given: later ones win."""
    from_file = read_config_file(args.config) if args.config else {}
    base = preset(args.preset or from_file.pop("preset", "default"))
    from_file.pop("preset", None)
    return base.replace(**from_file).replace(**_settings_given(args))


def _settings_given(args: argparse.Namespace) -> dict:
    """The settings given as flags (a subcommand without a setting's flag gives none)."""
    return {
        f.name: getattr(args, f.name, None)
        for f in dataclasses.fields(Config)
        if getattr(args, f.name, None) is not None
    }


def _add_cache_flags(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="keep compiled programs in DIR, so later runs load them instead of compiling "
        "(default: $MNIST_JAX_COMPILATION_CACHE, else mnist_jax/jax-compilation in "
        "$XDG_CACHE_HOME or ~/.cache)",
    )
    cache.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile everything afresh, keeping nothing (as MNIST_JAX_COMPILATION_CACHE=off)",
    )


def _use_compilation_cache(args: argparse.Namespace) -> None:
    """JAX's persistent compilation cache, where the flags or the environment put it."""
    from mnist_jax.runtime.compilation import default_cache_dir, enable_compilation_cache

    folder = args.compilation_cache or (None if args.no_compilation_cache else default_cache_dir())
    if folder:
        enable_compilation_cache(folder)


def _add_bench_parsers(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="time training on every platform JAX sees, against PyTorch and the "
        "matmul floor; `bench compare` puts results side by side",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a small run: one run of one epoch per row, the CNN's included, one value per sweep",
    )
    bench.add_argument(
        "--out",
        default="bench",
        help="folder for results.json, results.md and charts (default: bench)",
    )
    bench.add_argument(
        "--data-dir", help="tfds data folder (default: $TFDS_DATA_DIR, else tfds's default)"
    )
    for f in dataclasses.fields(BenchSettings):
        kind = {int: int, str: str}.get(type(f.default))
        kind = kind or (_int_list if isinstance(f.default[0], int) else _float_list)
        quick = _shown(getattr(QUICK_BENCH, f.name))
        bench.add_argument(
            _flag(f.name),
            dest=f"bench_{f.name}",
            type=kind,
            help=_help(f"{f.metadata['help']} (default: {_shown(f.default)}; --quick: {quick})"),
        )
    compare = bench.add_subparsers(dest="bench_command", parser_class=_Parser).add_parser(
        "compare",
        help="one table and one chart of several results.json, each row's time over a baseline's",
    )
    compare.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS_JSON",
        help="results.json files of `mnist-jax bench`",
    )
    compare.add_argument(
        "--out", default="compare", help="folder for compare.md and compare.png (default: compare)"
    )
    compare.add_argument(
        "--baseline",
        metavar="RESULTS_JSON",
        help="the result the ratios are to (default: the first)",
    )
    compare.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="compare results of different settings, listing the differences",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task, every `Config` field a flag where it applies."""
    parser = _Parser(prog="mnist-jax", description=__doc__)
    parser.add_argument(
        "--version",
        action="version",
        version=f"mnist-jax {importlib.metadata.version('mnist-jax')}",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train the MLP and print the accuracy table")
    _add_config_flags(train)
    train.add_argument("--out", help="run folder for config, metrics, summary, params and curves")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its newest checkpoint; with --epochs N beyond its own, "
        "extend it (where no schedule is shaped over its length); other settings must be its own",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files in OUT/tensorboard (tensorboard --logdir OUT)",
    )
    _add_cache_flags(train)
    multihost = train.add_argument_group(
        "several processes (hosts)",
        "JAX's distributed runtime; SLURM, Open MPI and Cloud TPU set it up without flags",
    )
    multihost.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    multihost.add_argument("--num-processes", type=int, help="how many processes the run spans")
    multihost.add_argument("--process-id", type=int, help="this process's rank, from 0")
    multihost.add_argument(
        "--distributed-timeout",
        type=int,
        default=300,  # jax.distributed.initialize's own (importing JAX here would slow --help)
        metavar="SECONDS",
        help="give up joining the runtime after this long, JAX's own default (default: 300)",
    )

    sweep = commands.add_parser(
        "sweep", help=_help("train several seeds as one vmapped program; mean, std, 95% CI")
    )
    _add_config_flags(sweep, skip=_NOT_FOR_SWEEPS)
    sweep.add_argument(
        "--seeds", type=int, default=8, help="number of seeds, from --seed on (default: 8)"
    )
    sweep.add_argument(
        "--grid",
        nargs="+",
        action="append",
        default=[],
        metavar=("SETTING", "VALUE"),
        help="sweep every combination: repeat per setting, e.g. --grid lr 0.001 0.01 "
        "--grid layer_sizes 784,200,100,10 784,400,10 (seeds in every cell); settings "
        "joined by / vary together: --grid optimizer/lr adam/0.001 sgd/0.1",
    )
    sweep.add_argument("--out", help="folder for sweep.json (grid.json with --grid)")
    sweep.add_argument("--quiet", action="store_true", help="no progress line")
    sweep.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files in OUT/tensorboard, one folder per seed "
        "(per cell and seed in a grid)",
    )
    _add_cache_flags(sweep)

    report = commands.add_parser(
        "report", help="tables (Markdown, LaTeX, CSV) and plots from runs, sweeps, grids"
    )
    report.add_argument("dirs", nargs="+", metavar="DIR", help="run, sweep or grid folders")
    report.add_argument(
        "--out", default="report", help="folder for the report's files (default: report)"
    )

    evaluate = commands.add_parser("eval", help="re-score a run's saved parameters")
    evaluate.add_argument("run_dir", help="a run folder (`mnist-jax train --out`)")
    evaluate.add_argument(
        "--split", choices=("test", "train"), default="test", help="the split to score"
    )
    evaluate.add_argument("--data-dir", help="tfds data folder (default: the run's)")
    evaluate.add_argument(
        "--best",
        action="store_true",
        help="the best epoch's parameters (params-best.npz, kept with a validation split)",
    )
    _add_cache_flags(evaluate)

    _add_bench_parsers(commands)

    prepare = commands.add_parser(
        "prepare", help="build the tfds mnist dataset from raw IDX files"
    )
    prepare.add_argument(
        "--idx-dir",
        default=os.environ.get("MNIST_JAX_IDX_DIR"),
        help="folder of the four IDX files, .gz or not (default: $MNIST_JAX_IDX_DIR)",
    )
    prepare.add_argument(
        "--data-dir", help="tfds data folder (default: $TFDS_DATA_DIR, else tfds's default)"
    )
    prepare.add_argument(
        "--skip-checksums",
        action="store_true",
        help="accept files other than the published MNIST ones (formats are still checked)",
    )
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


def flag_table(command: str) -> str:
    """A command's flags as a Markdown table (flag, default, meaning), read from the parser, so
    from `Config`'s field help for the settings: the docs' command-line page shows it.
    `command` is a subcommand's name, or `bench compare`."""
    parser = build_parser()
    for name in command.split():
        parser = _subparser(parser, name)
    lines = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = (
            ", ".join(f"`{flag}`" for flag in action.option_strings)
            or f"`{action.metavar or action.dest}`"
        )
        text = (action.help or "").replace("%%", "%")
        given = text.endswith(")") and " (default: " in text
        meaning, _, default = text.rpartition(" (default: ") if given else (text, "", "")
        if default:
            default = default[:-1]
        elif isinstance(action, argparse._StoreTrueAction):
            default = "off"
        elif action.default not in (None, []):
            default = _shown(action.default)
        lines.append(f"| {names} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def _resume_config(args: argparse.Namespace) -> Config:
    """The run's own config with the settings given on top (a preset or file: the whole config
    they make): training refuses any that differ, but for more epochs where it can extend the
    run."""
    if args.preset or args.config:
        return _config_from_args(args)
    return RunDir(args.resume).config().replace(**_settings_given(args))


def _train(args: argparse.Namespace) -> int:
    if args.resume and (args.out or args.overwrite):
        raise ConfigError(
            "--resume continues the run in its own folder: --out and --overwrite do not apply"
        )
    if args.resume:
        config, out = _resume_config(args), args.resume
    else:
        config, out = _config_from_args(args), args.out
    import jax

    from mnist_jax.reporters import ConsoleReporter, Reporter
    from mnist_jax.runtime.determinism import make_deterministic
    from mnist_jax.runtime.distributed import initialize_distributed
    from mnist_jax.training import train

    if config.deterministic:
        # before the distributed runtime or anything else starts JAX's backends
        make_deterministic()
    initialize_distributed(
        args.coordinator, args.num_processes, args.process_id, args.distributed_timeout
    )
    _use_compilation_cache(args)
    lead = jax.process_index() == 0  # only process 0 prints and writes
    reporter = ConsoleReporter(progress=False if args.quiet else None) if lead else Reporter()
    result = train(
        config,
        out,
        overwrite=args.overwrite,
        resume=bool(args.resume),
        reporter=reporter,
        tensorboard=args.tensorboard,
    )
    if out and lead:
        print(f"Run saved in {out}")
    if result.status == "interrupted":
        resume = f"; continue with: mnist-jax train --resume {out}" if out else ""
        where = (
            f"after epoch {result.history[-1].epoch}"
            if result.history
            else "before epoch 0's evaluation ended (nothing was trained)"
        )
        print(f"mnist-jax train: stopped by {result.stopped_by} {where}{resume}", file=sys.stderr)
        # as the shell reports a death by that signal
        return 128 + signal.Signals[result.stopped_by].value
    if result.status == "diverged":
        print(f"mnist-jax train: {result.divergence['message']}", file=sys.stderr)
        return 3
    return 0


def _sweep(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if args.seeds < 1:
        raise ConfigError(f"seeds must be positive, got {args.seeds}")
    seeds = [config.seed + i for i in range(args.seeds)]
    from mnist_jax.config import settings_label
    from mnist_jax.records import SPLITS
    from mnist_jax.reporters.console import seed_table_header, seed_table_legend, seed_table_row
    from mnist_jax.sweep import grid, grid_configs, sweep

    _use_compilation_cache(args)
    shown = not args.quiet and sys.stderr.isatty()

    def progress(epoch: int, num_epochs: int) -> None:
        if shown:
            print(
                f"\r\033[Ktraining: epoch {epoch}/{num_epochs}",
                end="" if epoch < num_epochs else "\r\033[K",
                file=sys.stderr,
                flush=True,
            )

    axes = _grid_axes(args.grid) if args.grid else {}
    cells = grid_configs(config, axes)  # checks every cell; a plain sweep is the one cell `config`
    # The columns every cell has: validation only if each cell holds one out.
    splits = [
        split
        for split in SPLITS
        if split != "validation" or all(c.validation_size for _, c in cells)
    ]
    print(seed_table_legend(seeds))
    if args.grid:
        width = max(len(settings_label(cell)) for cell, _ in cells)
        print(seed_table_header("Cell", width, splits, seconds=True))
        grid(
            config,
            axes,
            seeds,
            args.out,
            tensorboard=args.tensorboard,
            on_epoch=progress,
            on_cell=lambda settings, result: print(
                seed_table_row(
                    settings_label(settings),
                    width,
                    result.statistics()[-1],
                    splits,
                    result.seconds,
                ),
                flush=True,
            ),
        )
    else:
        result = sweep(config, seeds, args.out, tensorboard=args.tensorboard, on_epoch=progress)
        print(seed_table_header("Epoch", 5, splits))
        for row in result.statistics():
            print(seed_table_row(row["epoch"], 5, row, splits))
        devices = result.environment["num_devices"]
        print(
            f"{len(seeds)} models on {devices} device{'s' if devices > 1 else ''}, "
            f"{result.models_per_device} a device"
        )
        print(f"{result.seconds:.2f} s")
    if args.out:
        print(f"Saved in {os.path.join(args.out, 'grid.json' if args.grid else 'sweep.json')}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mnist_jax.report import REPORT_FILES, markdown_table, report

    print(markdown_table(report(args.dirs, args.out)), end="")
    print(f"Saved {', '.join(REPORT_FILES)} in {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from mnist_jax.steps import evaluation_steps
    from mnist_jax.training import score

    _use_compilation_cache(args)
    run = RunDir(args.run_dir)
    run.config()  # a folder without config.json holds no run
    if args.best and not os.path.exists(os.path.join(args.run_dir, "params-best.npz")):
        raise InputError(
            f"{args.run_dir} has no params-best.npz: only a run with a validation split keeps one"
        )
    if not os.path.exists(os.path.join(args.run_dir, "params.npz")):
        raise InputError(
            f"{args.run_dir} has no params.npz: a run writes it when it ends (continue a stopped "
            f"one with mnist-jax train --resume {args.run_dir})"
        )
    steps = evaluation_steps(run.config())
    config, params = run.load(steps.params_shape, best=args.best)
    model_state = run.load_model_state(steps.state_shape, best=args.best)
    if args.data_dir:
        config = config.replace(data_dir=args.data_dir)
    accuracy, mean_loss = score(params, config, args.split, model_state=model_state)
    print(f"{args.split} accuracy {100 * accuracy:.2f}%, mean loss {mean_loss:.4f}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.bench_command == "compare":
        from mnist_jax.bench.compare import compare

        print(compare(args.results, args.out, args.baseline, args.allow_mismatch), end="")
        print(f"Saved compare.md and compare.png in {args.out}")
        return 0
    from mnist_jax.bench.measure import run_benchmark
    from mnist_jax.bench.render import markdown, write_report

    base = QUICK_BENCH if args.quick else BenchSettings()
    given = {
        f.name: getattr(args, f"bench_{f.name}")
        for f in dataclasses.fields(BenchSettings)
        if getattr(args, f"bench_{f.name}") is not None
    }
    settings = dataclasses.replace(base, **given)
    results = run_benchmark(
        settings, args.data_dir, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    write_report(results, args.out)
    print(markdown(results), end="")
    print(f"Saved results.json, results.md, chart.png and sweeps.png in {args.out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from mnist_jax.data import prepare

    if not args.idx_dir:
        raise ConfigError("prepare needs --idx-dir or $MNIST_JAX_IDX_DIR")
    print(
        "Prepared the tfds mnist dataset in "
        f"{prepare(args.idx_dir, args.data_dir, not args.skip_checksums)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {
            "train": _train,
            "sweep": _sweep,
            "report": _report,
            "eval": _eval,
            "bench": _bench,
            "prepare": _prepare,
        }[args.command](args)
    except MnistJaxError as e:
        print(f"mnist-jax {args.command}: error: {e}", file=sys.stderr)
        return e.exit_status
    except (FileNotFoundError, RuntimeError) as e:  # not ours, but still one line
        print(f"mnist-jax {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
