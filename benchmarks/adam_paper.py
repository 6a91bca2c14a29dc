"""Kingma and Ba (ICLR 2015), section 6.2 and Figure 2, rerun the way the paper ran it.

Two hidden layers of 1000 ReLU units (Glorot's initialisation, the paper's era's), minibatch 128,
the mean loss. Panel (a): dropout (0.5 on the hidden units, 0.2 on the pixels); panel (b): no
dropout, a coupled L2 penalty of 1e-4 (the deterministic cost). For each panel, every optimizer's
learning rate is chosen by a grid of five values spanning two decades, by training cost (the
objective over the whole training split, without dropout) after `TUNING_EPOCHS` epochs, the grid
extended by 3x beyond its edge where the best rate is at one; the chosen rates then train for
`EPOCHS` epochs, all of them one grid.

`python -m benchmarks.adam_paper [--stage tune|extend|run|all]` writes into
benchmarks/results/adam-paper/: `{panel}-tuning/grid.json` (and `{panel}-tuning-N/grid.json`, the
extensions) and `{panel}/grid.json`. `chosen(panel)` reads the choice from the committed tuning
grids; the docs render their tables and figure from these files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "adam-paper"
TUNING_EPOCHS, EPOCHS, SEED = 3, 50, 42
NETWORK = dict(
    layer_sizes=(784, 1000, 1000, 10),
    activation="relu",
    init="glorot",
    batch_size=128,
    loss_reduction="mean",
    seed=SEED,
)
PANELS = {"a": dict(dropout=0.5, input_dropout=0.2), "b": dict(l2=1e-4)}
# Each optimizer as the paper's comparison has it: (optimizer, momentum, nesterov, eps), and its
# five rates.
OPTIMIZERS = {
    "adam": (("adam", None, False, 1e-8), (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
    "adagrad": (("adagrad", None, False, 1e-8), (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
    "rmsprop": (("rmsprop", None, False, 1e-8), (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
    "sgd_nesterov": (("sgd", 0.9, True, 1e-8), (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
    "adadelta": (("adadelta", None, False, 1e-6), (1e-2, 3e-2, 1e-1, 3e-1, 1.0)),
}
LINKED = ("optimizer", "learning_rate", "momentum", "nesterov", "eps")


def base_config(panel: str, epochs: int, network: dict | None = None):
    """A panel's network and regularisation, `network` overriding the network's settings."""
    from mnist_jax.config import Config

    return Config(**(NETWORK | (network or {})), **PANELS[panel], num_epochs=epochs)


def tuning_axes(rates: dict[str, tuple] | None = None) -> dict:
    """Every optimizer at each of its rates (`rates` overriding some optimizers' lists), one linked
    axis."""
    return {
        LINKED: [
            (name, rate, momentum, nesterov, eps)
            for label, ((name, momentum, nesterov, eps), default) in OPTIMIZERS.items()
            for rate in (rates or {}).get(label, default)
        ]
    }


def training_cost(cell: dict) -> float:
    """A grid cell's final training cost: the mean NLL over the whole training split, no
    dropout."""
    return cell["statistics"][-1]["train_loss"]["mean"]


def tuning_cells(panel: str, root: Path = RESULTS) -> list[dict]:
    """Every tuning cell of a panel: its grid's, and its extension's where one was needed."""
    import json

    return [
        cell
        for path in sorted(root.glob(f"{panel}-tuning*/grid.json"))
        for cell in json.loads(path.read_text())["cells"]
    ]


def extension_axes(panel: str, root: Path = RESULTS) -> dict | None:
    """One more rate, three times beyond, for each optimizer whose best rate is at its grid's edge
    (so that the chosen rate is bracketed); None if every best rate is inside."""
    extra = []
    for label, cell in chosen(panel, root).items():
        (name, momentum, nesterov, eps), _ = OPTIMIZERS[label]
        tried = sorted(
            c["settings"]["learning_rate"]
            for c in tuning_cells(panel, root)
            if (c["settings"]["optimizer"], c["settings"]["nesterov"]) == (name, nesterov)
        )
        rate = cell["settings"]["learning_rate"]
        if rate in (tried[0], tried[-1]):
            extra.append(
                (
                    name,
                    float(f"{rate * 3 if rate == tried[-1] else rate / 3:.3g}"),
                    momentum,
                    nesterov,
                    eps,
                )
            )
    return {LINKED: extra} if extra else None


def chosen(panel: str, root: Path = RESULTS) -> dict[str, dict]:
    """Each optimizer's cell of lowest final training cost among the panel's committed tuning
    cells."""
    cells = tuning_cells(panel, root)
    best = {}
    for label, ((name, momentum, nesterov, _eps), _) in OPTIMIZERS.items():
        mine = [
            c
            for c in cells
            if (c["settings"]["optimizer"], c["settings"]["momentum"], c["settings"]["nesterov"])
            == (name, momentum, nesterov)
        ]
        best[label] = min(mine, key=training_cost)
    return best


def run_axes(panel: str, root: Path = RESULTS) -> dict:
    return {
        LINKED: [
            tuple(cell["settings"][name] for name in LINKED)
            for cell in chosen(panel, root).values()
        ]
    }


# The independent reproduction (tylerebowers/Adam-Optimizer-Reproduction, PyTorch, dropout 0.5 on
# the hidden layers, an L2 penalty of 1e-4, batch 128, 200 epochs): each optimizer's learning rate
# and final training cost.
REPRODUCTION = {
    "adam": (8e-5, 0.0240),
    "adagrad": (0.02, 0.0243),
    "sgd_nesterov": (0.01, 0.0261),
    "rmsprop": (2e-4, 0.0297),
    "adadelta": (0.5, 0.0316),
}
# Panel (a)'s order in the paper, lowest cost first, in groups: Adam first (the paper's text), then
# the others as the reproduction's report describes the paper's figure (which is not available
# offline here).
PAPER_GROUPS = (("adam",), ("rmsprop", "adadelta"), ("adagrad", "sgd_nesterov"))
NAMES = {
    "adam": "Adam",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSProp",
    "sgd_nesterov": "SGD, Nesterov momentum",
    "adadelta": "AdaDelta",
}


def label_of(settings: dict) -> str:
    return next(
        label
        for label, ((name, _, nesterov, _), _) in OPTIMIZERS.items()
        if (settings["optimizer"], settings["nesterov"]) == (name, nesterov)
    )


def long_runs(panel: str, root: Path = RESULTS) -> dict[str, dict]:
    """Each optimizer's cell of the panel's committed long run."""
    import json

    cells = json.loads((root / panel / "grid.json").read_text())["cells"]
    return {label_of(cell["settings"]): cell for cell in cells}


def tuning_table(panel: str, root: Path = RESULTS) -> str:
    """Every rate tried for each optimizer with its training cost after the tuning epochs; the
    chosen one in bold."""
    best = {
        label: cell["settings"]["learning_rate"] for label, cell in chosen(panel, root).items()
    }
    epochs = len(tuning_cells(panel, root)[0]["statistics"]) - 1
    rows = [f"| optimizer | learning rate: training cost after {epochs} epochs |", "|---|---|"]
    for label in OPTIMIZERS:
        cells = sorted(
            (c for c in tuning_cells(panel, root) if label_of(c["settings"]) == label),
            key=lambda c: c["settings"]["learning_rate"],
        )
        tried = [(c["settings"]["learning_rate"], training_cost(c)) for c in cells]
        rows.append(
            f"| {NAMES[label]} | "
            + ", ".join(
                (f"**{rate:g}: {cost:.4f}**" if rate == best[label] else f"{rate:g}: {cost:.4f}")
                for rate, cost in tried
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


def results_table(root: Path = RESULTS) -> str:
    """Both panels' long runs: each optimizer's rate, its training cost at four epochs and its
    final test accuracy, lowest final cost first; beside it, the reproduction's rate and final
    cost."""
    epochs = len(next(iter(long_runs("a", root).values()))["statistics"]) - 1
    shown = sorted({1, epochs // 5, epochs // 2, epochs} - {0})
    rows = [
        "| panel | optimizer | learning rate | "
        + " | ".join(f"training cost, epoch {e}" for e in shown)
        + " | test accuracy (%) | reproduction: rate, final cost (200 epochs) |",
        "|---|---|--:|" + "--:|" * len(shown) + "--:|---|",
    ]
    for panel in PANELS:
        runs = long_runs(panel, root)
        for label, cell in sorted(runs.items(), key=lambda item: training_cost(item[1])):
            stats = cell["statistics"]
            costs = " | ".join(f"{stats[e]['train_loss']['mean']:.4f}" for e in shown)
            rate, cost = REPRODUCTION[label]
            rows.append(
                f"| ({panel}) | {NAMES[label]} | "
                f"{cell['settings']['learning_rate']:g} | {costs} | "
                f"{100 * stats[-1]['test_accuracy']['mean']:.2f} | {rate:g}, {cost:.4f} |"
            )
    return "\n".join(rows) + "\n"


def order(panel: str, root: Path = RESULTS) -> str:
    """The panel's optimizers by final training cost, lowest first."""
    runs = long_runs(panel, root)
    return ", ".join(
        NAMES[label] for label in sorted(runs, key=lambda label: training_cost(runs[label]))
    )


def length(root: Path = RESULTS) -> str:
    """How long the committed runs were: the epochs, and each panel's median training time a
    run."""
    import statistics

    runs = {panel: long_runs(panel, root) for panel in PANELS}
    epochs = len(next(iter(runs["a"].values()))["statistics"]) - 1
    tuning = len(tuning_cells("a", root)[0]["statistics"]) - 1
    (a, b) = (
        f"{statistics.median(cell['seconds'] for cell in runs[panel].values()) / 60:.1f}"
        for panel in PANELS
    )
    return (
        f"The rates were chosen after {tuning} epochs; each chosen rate then trained for "
        f"{epochs} epochs: a median of {a} minutes a run in panel (a) and {b} in panel (b), "
        f"{len(runs['a'])} runs a panel, on the 2-core CPU that made them.\n"
    )


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}[n]


def agreement(root: Path = RESULTS) -> str:
    """Each panel's order against the reproduction's (where Adam ends, and how many pairs of
    optimizers are in its order), and panel (a)'s against the paper's groups (`PAPER_GROUPS`)."""
    import itertools

    theirs = sorted(REPRODUCTION, key=lambda label: REPRODUCTION[label][1])
    pairs = list(itertools.combinations(OPTIMIZERS, 2))
    lines = []
    for panel in PANELS:
        runs = long_runs(panel, root)
        ours = sorted(runs, key=lambda label: training_cost(runs[label]))
        same = sum(
            (ours.index(x) < ours.index(y)) == (theirs.index(x) < theirs.index(y))
            for x, y in pairs
        )
        lines.append(
            f"- Panel ({panel}): Adam ends {_ordinal(ours.index('adam') + 1)} of {len(ours)} "
            f"here, {_ordinal(theirs.index('adam') + 1)} in the reproduction; {same} of the "
            f"{len(pairs)} pairs of optimizers are in the reproduction's order.\n"
        )
    runs = long_runs("a", root)
    ours = sorted(runs, key=lambda label: training_cost(runs[label]))
    ranked = [
        (x, y)
        for i, group in enumerate(PAPER_GROUPS)
        for x in group
        for later in PAPER_GROUPS[i + 1 :]
        for y in later
    ]
    same = sum(ours.index(x) < ours.index(y) for x, y in ranked)
    groups = "; then ".join(
        " and ".join(NAMES[label] for label in group) for group in PAPER_GROUPS
    )
    lines.append(
        f"- Panel (a) against the paper's order ({groups}): {same} of the {len(ranked)} pairs it "
        "orders are in its order.\n"
    )
    return "".join(lines)


def figure(root: Path = RESULTS) -> None:
    """training-cost.png: each panel's training cost by epoch, log scale, a line per optimizer, as
    the paper's Figure 2 draws it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, (panel, title) in zip(
        fig.subplots(1, 2),
        (("a", "(a) with dropout"), ("b", "(b) no dropout, L2 1e-4")),
        strict=True,
    ):
        for label, cell in long_runs(panel, root).items():
            stats = cell["statistics"][1:]
            ax.plot(
                [row["epoch"] for row in stats],
                [row["train_loss"]["mean"] for row in stats],
                label=NAMES[label],
            )
        ax.set(
            yscale="log",
            xlabel="epoch",
            ylabel="training cost (mean NLL, no dropout)",
            title=title,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.savefig(root / "training-cost.png", dpi=120)


def rerun(
    root: Path = RESULTS,
    stage: str = "all",
    panels=tuple(PANELS),
    network: dict | None = None,
    tuning_epochs: int = TUNING_EPOCHS,
    epochs: int = EPOCHS,
    rates: dict[str, tuple] | None = None,
    extensions: int = 3,
    on_cell=None,
) -> None:
    """The experiment into `root`: each panel's tuning grid (`stage` tune), up to `extensions`
    rounds of extension where a best rate is at an edge (extend), then the chosen rates' long runs
    and the figure (run). `network`, `rates` and the epochs shrink it (the notebook's quick
    version)."""
    from mnist_jax.sweep import grid

    on_cell = on_cell or (lambda settings, result: None)

    def tune(panel: str, axes: dict, folder: str) -> None:
        grid(
            base_config(panel, tuning_epochs, network),
            axes,
            [SEED],
            str(root / folder),
            on_cell=on_cell,
        )

    for panel in panels:
        if stage in ("tune", "all"):
            tune(panel, tuning_axes(rates), f"{panel}-tuning")
        for attempt in range(extensions if stage in ("extend", "all") else 0):
            axes = extension_axes(panel, root)
            if not axes:
                break
            tune(panel, axes, f"{panel}-tuning-{attempt + 2}")
    if stage in ("run", "all"):
        for panel in panels:
            grid(
                base_config(panel, epochs, network),
                run_axes(panel, root),
                [SEED],
                str(root / panel),
                on_cell=on_cell,
            )
        figure(root)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=("tune", "extend", "run", "all"), default="all")
    parser.add_argument("--panels", nargs="+", default=list(PANELS))
    args = parser.parse_args()

    def progress(settings: dict, result) -> None:
        print(
            settings,
            "final",
            dict(zip(result.metrics, result.histories[0, -1], strict=True)),
            flush=True,
        )

    rerun(stage=args.stage, panels=args.panels, on_cell=progress)


if __name__ == "__main__":
    main()
