"""Statistics over seeds: mean, standard deviation and the 95% confidence interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Student's t quantile; scipy.stats takes half a second to import
from scipy.special import stdtrit


def statistics(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the half-width of the 95% t confidence interval."""
    values = np.asarray(values, np.float64)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half_width = float(stdtrit(n - 1, 0.975) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std, "ci95": half_width, "n": n}
