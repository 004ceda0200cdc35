"""Seeded simulation: Benjamini-Hochberg keeps a breakdown's false "significant" rows in bound.

Bands (stated here and in docs/insights.md), ``mc`` the Monte Carlo standard error: with no effect
anywhere, the chance that some group of a breakdown (3 plan bands, 4 activity groups, unequal
sizes and base rates) is badged significant is at most 5 % + 2 mc after adjustment, where the raw
p-values give about 14-19 %; with a real effect in one group, the false discovery rate stays at
most 5 % + 2 mc.
"""

from __future__ import annotations

import pytest

from perkflow.insights.stats import simulate_cuped


@pytest.mark.parametrize(
    "groups", [simulate_cuped.PLAN_GROUPS, simulate_cuped.ACTIVITY_GROUPS], ids=["plan", "activity"]
)
@pytest.mark.parametrize(("targets", "controls"), [(2000, 500), (20000, 5000)])
def test_bh_keeps_false_significant_rows_in_bound(
    groups: tuple[tuple[float, float], ...], targets: int, controls: int
) -> None:
    bh = simulate_cuped.breakdown_false_rate(groups, targets=targets, controls=controls)
    assert bh.value <= 0.05 + 2 * bh.mc_error, bh
    raw = simulate_cuped.breakdown_false_rate(
        groups, targets=targets, controls=controls, adjusted=False, reps=2000
    )
    assert raw.value > 0.10, raw  # unadjusted, a false row is two to four times as likely
    fdr = simulate_cuped.breakdown_false_rate(
        groups, targets=targets, controls=controls, real=0.05, reps=2000
    )
    assert fdr.value <= 0.05 + 2 * fdr.mc_error, fdr
