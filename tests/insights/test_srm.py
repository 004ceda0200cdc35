"""The sample-ratio-mismatch check against scipy's chisquare and on simulated fair splits."""

from __future__ import annotations

import random

import pytest
from scipy.stats import chisquare

from perkflow.insights.stats import srm


def test_matches_scipy_chisquare() -> None:
    for target, control, bp in [(900, 100, 1_000), (880, 120, 1_000), (500, 430, 5_000)]:
        got = srm.check(target, control, control_share_bp=bp)
        n = target + control
        want = chisquare([target, control], [n * (1 - bp / 10_000), n * bp / 10_000])
        assert got.chi2 == pytest.approx(want.statistic)
        assert got.p_value == pytest.approx(want.pvalue)


def test_flags_a_lost_chunk_of_one_cell_and_not_a_fair_split() -> None:
    # 10 % planned; a fifth of the targets lost on the way to the report.
    lost = srm.check(7_200, 1_000, control_share_bp=1_000)
    assert lost.mismatch and lost.p_value is not None and lost.p_value < 1e-6
    fair = srm.check(9_030, 970, control_share_bp=1_000)
    assert not fair.mismatch and fair.observed_control_share == pytest.approx(0.097)


def test_false_alarms_stay_near_its_threshold_on_random_splits() -> None:
    rng = random.Random(14)
    alarms = 0
    runs = 2_000
    for _ in range(runs):
        n = rng.randint(50, 2_000)
        control = sum(rng.random() < 0.1 for _ in range(n))
        alarms += srm.check(n - control, control, control_share_bp=1_000).mismatch
    # Nominal 0.1 %: at most a handful of 2,000 (Poisson upper bound of mean 2 at 99.9 %: 9).
    assert alarms <= 9


def test_undefined_cases_say_nothing() -> None:
    empty = srm.check(0, 0, control_share_bp=1_000)
    assert empty.p_value is None and not empty.mismatch and empty.observed_control_share is None
    assert srm.check(100, 0, control_share_bp=0).p_value is None
    with pytest.raises(ValueError):
        srm.check(-1, 3, control_share_bp=1_000)
