"""Learning curves as a PNG."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mnist_jax.results import EpochMetrics  # noqa: E402


def plot_curves(history: Sequence[EpochMetrics], path: str) -> None:
    """Error rate (%) and mean loss by epoch, train and test, on log scales."""
    epochs = [m.epoch for m in history]
    fig, (error_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for split in ("train", "validation", "test"):
        if getattr(history[0], f"{split}_accuracy") is None:
            continue
        error_ax.plot(epochs, [100 * (1 - getattr(m, f"{split}_accuracy")) for m in history], "o-", label=split)
        loss_ax.plot(epochs, [getattr(m, f"{split}_loss") for m in history], "o-", label=split)
    error_ax.set(xlabel="epoch", ylabel="error (%)", title="Error rate (100 - accuracy)", yscale="log")
    loss_ax.set(xlabel="epoch", ylabel="mean negative log-likelihood", title="Loss", yscale="log")
    for ax in (error_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
