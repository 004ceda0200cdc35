"""CUPED: the arithmetic against an independent regression, and seeded simulations of its errors.

Bands (stated here and in docs/insights.md), ``mc`` the Monte Carlo standard error: over 200 and
2,000 subscribers per cell, base rates 5 % and 30 %, a bill that predicts nothing or strongly:

* the CUPED interval holds the true effect 93 %…97 % of the time, with and without an effect;
* with no effect it is called significant at most 5 % + 2 mc of the time;
* where the bill predicts the response the CUPED interval is narrower than the plain one
  (variance reduced by at least 10 %), and where it predicts nothing the two are the same width.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from perkflow.insights.stats import cuped, simulate_cuped


def test_adjusted_difference_is_the_ancova_coefficient() -> None:
    rng = np.random.default_rng(5)
    x = rng.lognormal(4, 0.5, 1000)
    arm = np.r_[np.ones(600), np.zeros(400)]
    y = (rng.random(1000) < 0.1 + 0.002 * (x - 55) + 0.05 * arm).astype(float)
    t = cuped.moments(list(x[:600]), list(y[:600]))
    c = cuped.moments(list(x[600:]), list(y[600:]))
    result = cuped.adjust(t, c)
    assert isinstance(result, cuped.Cuped)
    # Least squares of y on (1, arm, x): the arm's coefficient is CUPED's adjusted difference
    # and the x coefficient its theta (within-cell pooled).
    design = np.column_stack([np.ones(1000), arm, x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert result.adjusted == pytest.approx(beta[1], rel=1e-9)
    assert result.theta == pytest.approx(beta[2], rel=1e-9)
    assert result.plain == pytest.approx(y[:600].mean() - y[600:].mean())
    plain_se = math.sqrt(y[:600].var(ddof=1) / 600 + y[600:].var(ddof=1) / 400)
    assert result.plain_se == pytest.approx(plain_se)
    adj = y - result.theta * x
    se = math.sqrt(adj[:600].var(ddof=1) / 600 + adj[600:].var(ddof=1) / 400)
    assert result.adjusted_se == pytest.approx(se)
    assert result.variance_reduction == pytest.approx(1 - se**2 / plain_se**2)
    assert 0 < result.variance_reduction < 1
    low, high = result.adjusted_ci95
    assert high - low == pytest.approx(2 * 1.959963984540054 * se)


def test_not_enough_data_has_no_number() -> None:
    small = cuped.moments([1.0] * 50, [0.0, 1.0] * 25)
    big = cuped.moments([float(i) for i in range(200)], [float(i % 3 == 0) for i in range(200)])
    assert cuped.adjust(small, big) is cuped.TooLittle.TINY_CELL
    flat = cuped.moments([5.0] * 200, [float(i % 2) for i in range(200)])
    assert cuped.adjust(flat, flat) is cuped.TooLittle.NO_COVARIATE_VARIATION
    silent = cuped.moments([float(i) for i in range(200)], [0.0] * 200)
    assert cuped.adjust(silent, big) is cuped.TooLittle.NO_VARIATION
    with pytest.raises(ValueError):
        cuped.moments([1.0], [])


GRID = [
    (n, base, strength)
    for n in simulate_cuped.CUPED_SIZES
    for base in simulate_cuped.CUPED_BASES
    for strength in simulate_cuped.CUPED_STRENGTHS
]


@pytest.mark.parametrize(("n", "base", "strength"), GRID)
def test_cuped_interval_covers_and_keeps_its_false_positive_rate(
    n: int, base: float, strength: float
) -> None:
    null = simulate_cuped.cuped_figures(n, base, strength, reps=3000)
    assert 0.93 <= null.coverage.value <= 0.97, null
    assert null.rejected.value <= 0.05 + 2 * null.rejected.mc_error, null
    assert null.not_enough <= 0.01, null
    lifted = simulate_cuped.cuped_figures(n, base, strength, effect=0.02, reps=1500)
    assert 0.93 <= lifted.coverage.value <= 0.97, lifted
    if strength:
        # The bill predicts the response: a narrower interval, the same coverage.
        assert null.variance_reduction >= 0.10 and null.width_ratio <= 0.95, null
    else:
        assert abs(null.variance_reduction) <= 0.01 and null.width_ratio == pytest.approx(
            1.0, abs=0.01
        )
