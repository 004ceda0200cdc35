"""Is the difference between two response rates more than chance? And when not to say.

The rule (stated in the report):

* a cell with no contacts, or fewer than ``MIN_CELL`` contacts, or no variation at all (nobody
  responded, or everybody did) is **not enough data**: no p-value, never "significant";
* otherwise, when every expected count of the 2×2 table under "no difference" is at least
  ``MIN_EXPECTED`` (Cochran's rule), the **pooled two-proportion z-test**:
  ``z = (p_t − p_c) / sqrt(p̂(1 − p̂)(1/n_t + 1/n_c))``, ``p = 2·Φ(−|z|)`` (statsmodels
  ``proportions_ztest``);
* when some expected count is smaller, **Fisher's exact test** (two-sided, scipy
  ``fisher_exact``), which holds its level however small the counts are (it is conservative).

Assumptions: subscribers assigned to the cells at random and independently; one response each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MIN_CELL = 10
MIN_EXPECTED = 5.0


class NotEnoughData(StrEnum):
    """Why a comparison has no p-value."""

    EMPTY_CELL = "empty_cell"
    TINY_CELL = "tiny_cell"
    NO_VARIATION = "no_variation"


class Method(StrEnum):
    """Which test gave the p-value."""

    Z = "z"
    FISHER = "fisher"


@dataclass(frozen=True, slots=True)
class TestResult:
    """A p-value, the test that gave it and (for the z-test) its statistic."""

    method: Method
    p_value: float
    z: float | None


def not_enough_data(x_t: int, n_t: int, x_c: int, n_c: int) -> NotEnoughData | None:
    """The reason there is too little data to test, or None when a test is possible."""
    if n_t <= 0 or n_c <= 0:
        return NotEnoughData.EMPTY_CELL
    if n_t < MIN_CELL or n_c < MIN_CELL:
        return NotEnoughData.TINY_CELL
    responders = x_t + x_c
    if responders == 0 or responders == n_t + n_c:
        return NotEnoughData.NO_VARIATION
    return None


def z_statistic(x_t: int, n_t: int, x_c: int, n_c: int) -> float | None:
    """The pooled two-proportion z statistic; None when it is undefined."""
    if n_t <= 0 or n_c <= 0:
        return None
    pooled = (x_t + x_c) / (n_t + n_c)
    var = pooled * (1 - pooled) * (1 / n_t + 1 / n_c)
    if var <= 0:
        return None
    return (x_t / n_t - x_c / n_c) / math.sqrt(var)


def large_enough_for_z(x_t: int, n_t: int, x_c: int, n_c: int) -> bool:
    """Cochran's rule: every expected count of the table under the null is at least 5."""
    pooled = (x_t + x_c) / (n_t + n_c)
    return min(n_t, n_c) * min(pooled, 1 - pooled) >= MIN_EXPECTED


def rate_test(x_t: int, n_t: int, x_c: int, n_c: int) -> TestResult | NotEnoughData:
    """The two-sided test of equal rates, chosen by the rule above, or why there is none."""
    reason = not_enough_data(x_t, n_t, x_c, n_c)
    if reason is not None:
        return reason
    from scipy import stats  # imported where used: scipy takes a second to import

    if large_enough_for_z(x_t, n_t, x_c, n_c):
        z = z_statistic(x_t, n_t, x_c, n_c)
        assert z is not None  # there is variation, so the pooled variance is positive
        return TestResult(Method.Z, float(2 * stats.norm.sf(abs(z))), z)
    table = [[x_t, n_t - x_t], [x_c, n_c - x_c]]
    p = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    return TestResult(Method.FISHER, min(1.0, p), None)
