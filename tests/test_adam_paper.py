"""The Adam paper rerun's bookkeeping (benchmarks/adam_paper.py) on hand-made grid files: the rates
it chooses, where it extends a grid, and how it counts its order against the reproduction's."""

import json

import pytest

from benchmarks import adam_paper as paper


def cell(label: str, rate: float, costs: list[float], seconds: float = 60.0) -> dict:
    (name, momentum, nesterov, eps), _ = paper.OPTIMIZERS[label]
    settings = dict(zip(paper.LINKED, (name, rate, momentum, nesterov, eps), strict=True))
    statistics = [
        {"epoch": epoch, "train_loss": {"mean": cost}, "test_accuracy": {"mean": 0.9}}
        for epoch, cost in enumerate(costs)
    ]
    return {"settings": settings, "statistics": statistics, "seconds": seconds}


def write(root, folder: str, cells: list[dict]) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "grid.json").write_text(json.dumps({"cells": cells}))


@pytest.fixture
def tuned(tmp_path):
    """Panel a tuned: each optimizer's third rate best, except Adam's (its last) and AdaGrad's (its
    first)."""
    best = {"adam": 4, "adagrad": 0}
    cells = [
        cell(label, rate, [2.3, 1.0 + abs(index - best.get(label, 2))])
        for label, (_, rates) in paper.OPTIMIZERS.items()
        for index, rate in enumerate(rates)
    ]
    write(tmp_path, "a-tuning", cells)
    return tmp_path


def test_each_optimizer_keeps_its_rate_of_lowest_training_cost(tuned):
    rates = {
        label: cell["settings"]["learning_rate"]
        for label, cell in paper.chosen("a", tuned).items()
    }
    assert rates == {
        label: rates_tried[{"adam": 4, "adagrad": 0}.get(label, 2)]
        for label, (_, rates_tried) in paper.OPTIMIZERS.items()
    }


def test_a_grid_goes_on_past_the_edge_where_its_best_rate_is(tuned):
    ((axis, extra),) = paper.extension_axes("a", tuned).items()
    assert axis == paper.LINKED
    assert extra == [("adam", 3e-3, None, False, 1e-8), ("adagrad", 3.33e-4, None, False, 1e-8)]
    # The extension's rates are worse: every best rate is now inside its grid.
    write(
        tuned, "a-tuning-2", [cell("adam", 3e-3, [2.3, 5.0]), cell("adagrad", 3.33e-4, [2.3, 5.0])]
    )
    assert paper.extension_axes("a", tuned) is None


def long_runs(root, panel: str, order: list[str], seconds: float = 60.0) -> None:
    """A panel's long runs whose final costs put the optimizers in `order`, lowest first."""
    write(
        root,
        panel,
        [
            cell(label, 1e-3, [2.3, 0.5, 0.1 * (1 + order.index(label))], seconds)
            for label in order
        ],
    )


def test_the_order_is_counted_against_the_reproductions_pair_by_pair(tmp_path):
    theirs = sorted(paper.REPRODUCTION, key=lambda label: paper.REPRODUCTION[label][1])
    long_runs(tmp_path, "a", theirs)
    swapped = [theirs[1], theirs[0], *theirs[2:]]  # one pair out of order
    long_runs(tmp_path, "b", list(reversed(theirs)))
    assert theirs[0] == "adam"
    assert paper.agreement(tmp_path).splitlines() == [
        "- Panel (a): Adam ends first of 5 here, first in the reproduction; 10 of the 10 pairs of "
        "optimizers are in the reproduction's order.",
        "- Panel (b): Adam ends fifth of 5 here, first in the reproduction; 0 of the 10 pairs of "
        "optimizers are in the reproduction's order.",
        # The reproduction's order against the paper's groups: Adam first (4 pairs), but AdaGrad
        # and SGD ahead of RMSProp and AdaDelta (4 pairs the other way).
        "- Panel (a) against the paper's order (Adam; then RMSProp and AdaDelta; then AdaGrad and "
        "SGD, Nesterov momentum): 4 of the 8 pairs it orders are in its order.",
    ]
    (tmp_path / "b" / "grid.json").unlink()
    (tmp_path / "b").rmdir()
    long_runs(tmp_path, "b", swapped)
    assert (
        "Adam ends second of 5 here, first in the reproduction; 9 of the 10 pairs"
        in paper.agreement(tmp_path)
    )
    (tmp_path / "a" / "grid.json").unlink()
    (tmp_path / "a").rmdir()
    # Adam's first pair lost
    long_runs(tmp_path, "a", ["adadelta", "adam", "rmsprop", "sgd_nesterov", "adagrad"])
    assert (
        "(Adam; then RMSProp and AdaDelta; then AdaGrad and SGD, Nesterov momentum): "
        "7 of the 8 pairs" in (paper.agreement(tmp_path))
    )
    assert paper.order("b", tmp_path) == ", ".join(paper.NAMES[label] for label in swapped)


def test_the_length_line_gives_the_epochs_and_each_panels_median_minutes(tuned):
    long_runs(tuned, "a", list(paper.OPTIMIZERS), seconds=90.0)
    write(
        tuned,
        "b",
        [
            cell(label, 1e-3, [2.3, 0.5, 0.2], seconds)
            for label, seconds in zip(paper.OPTIMIZERS, (60, 120, 180, 240, 600), strict=True)
        ],
    )
    assert paper.length(tuned) == (
        "The rates were chosen after 1 epochs; each chosen rate then trained for 2 "
        "epochs: a median of 1.5 minutes a run in panel (a) and 3.0 in panel (b), 5 runs "
        "a panel, on the 2-core CPU that made them.\n"
    )
