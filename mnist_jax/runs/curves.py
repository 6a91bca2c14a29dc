"""A run's learning curves, `curves.png`: error rate and loss by epoch for every split."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure  # not pyplot: no global figure state, no backend switch

from mnist_jax.records import EpochMetrics


def plot_curves(history: Sequence[EpochMetrics], path: str) -> None:
    """Error rate (%) and mean loss by epoch, train and test, on log scales."""
    epochs = [m.epoch for m in history]
    fig = Figure(figsize=(10, 4))  # fixed margins: a layout engine would double the drawing time
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.25)
    error_ax, loss_ax = fig.subplots(1, 2)
    for split in ("train", "validation", "test"):
        if getattr(history[0], f"{split}_accuracy") is None:
            continue
        error_ax.plot(
            epochs,
            [100 * (1 - getattr(m, f"{split}_accuracy")) for m in history],
            "o-",
            label=split,
        )
        loss_ax.plot(epochs, [getattr(m, f"{split}_loss") for m in history], "o-", label=split)
    error_ax.set(
        xlabel="epoch", ylabel="error (%)", title="Error rate (100 - accuracy)", yscale="log"
    )
    loss_ax.set(xlabel="epoch", ylabel="mean negative log-likelihood", title="Loss", yscale="log")
    for ax in (error_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=120)
