"""Statistics over seeds against a hand computation."""

import math

import pytest

from mnist_jax.stats import statistics


def test_statistics_against_a_hand_computation():
    got = statistics([0.90, 0.92, 0.94])
    assert got["mean"] == pytest.approx(0.92)
    assert got["std"] == pytest.approx(0.02)  # sqrt(((-0.02)**2 + 0 + 0.02**2) / 2)
    # t(0.975, 2) = 4.3027
    assert got["ci95"] == pytest.approx(4.302652729911275 * 0.02 / math.sqrt(3))
    assert got["n"] == 3
    single = statistics([0.5])
    assert single["std"] == 0 and math.isnan(single["ci95"])
