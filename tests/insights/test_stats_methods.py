"""Each statistical method against an oracle: statsmodels, scipy, or an exact formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportion_confint,
)

from perkflow.insights.stats import bayes, intervals, multiplicity, power, sequential, tests

COUNTS = [(0, 1), (0, 10), (1, 10), (5, 10), (10, 10), (1, 100), (37, 250), (999, 1000)]


@pytest.mark.parametrize(("x", "n"), COUNTS)
def test_wilson_matches_statsmodels(x: int, n: int) -> None:
    low, high = proportion_confint(x, n, method="wilson")
    assert intervals.wilson(x, n) == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b"), [(a, b) for a, b in itertools.product(COUNTS, repeat=2) if a != b][:40]
)
def test_newcombe_matches_statsmodels_and_stays_in_range(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    ci = intervals.newcombe(a[0], a[1], b[0], b[1])
    low, high = confint_proportions_2indep(a[0], a[1], b[0], b[1], method="newcomb")
    assert ci == pytest.approx((low, high), abs=1e-12)
    assert ci is not None and -1 <= ci[0] < ci[1] <= 1


def test_newcombe_has_width_at_zero_against_zero_and_none_for_an_empty_cell() -> None:
    ci = intervals.newcombe(0, 50, 0, 50)
    assert ci is not None and ci[0] < 0 < ci[1]
    assert intervals.newcombe(0, 0, 3, 10) is None


def test_the_test_rule_z_fisher_or_not_enough_data() -> None:
    assert tests.rate_test(0, 0, 1, 10) is tests.NotEnoughData.EMPTY_CELL
    assert tests.rate_test(2, 2, 0, 2) is tests.NotEnoughData.TINY_CELL
    assert tests.rate_test(0, 50, 0, 50) is tests.NotEnoughData.NO_VARIATION
    assert tests.rate_test(50, 50, 50, 50) is tests.NotEnoughData.NO_VARIATION
    exact = tests.rate_test(3, 100, 0, 100)
    assert isinstance(exact, tests.TestResult) and exact.method is tests.Method.FISHER
    assert exact.p_value == pytest.approx(fisher_exact([[3, 97], [0, 100]]).pvalue)
    large = tests.rate_test(30, 100, 10, 100)
    assert isinstance(large, tests.TestResult) and large.method is tests.Method.Z


P_VALUES = [
    [0.01, 0.04, 0.03, 0.2, 0.005],
    [0.5],
    [0.001, 0.001, 0.9, 0.04],
    list(np.random.default_rng(7).uniform(0, 0.2, 31)),
]


@pytest.mark.parametrize("ps", P_VALUES)
def test_holm_and_bh_match_statsmodels(ps: list[float]) -> None:
    assert multiplicity.holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]))
    assert multiplicity.benjamini_hochberg(ps) == pytest.approx(
        list(multipletests(ps, method="fdr_bh")[1])
    )


def test_adjustment_skips_comparisons_without_a_p_value() -> None:
    assert multiplicity.holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])
    assert multiplicity.benjamini_hochberg([None, None]) == [None, None]


def test_msprt_against_its_formula_and_the_confidence_sequence_agrees_with_the_p_value() -> None:
    tau = 0.02
    x_t, n_t, x_c, n_c = 130, 1000, 100, 1000
    s = sequential.look(x_t, n_t, x_c, n_c, tau=tau)
    assert s is not None
    var = 0.13 * 0.87 / 1000 + 0.1 * 0.9 / 1000
    lr = math.sqrt(var / (var + tau**2)) * math.exp(tau**2 * 0.03**2 / (2 * var * (var + tau**2)))
    assert s.p_value == pytest.approx(min(1, 1 / lr))
    for alpha in (0.01, 0.05, 0.2):
        a = sequential.look(x_t, n_t, x_c, n_c, tau=tau, alpha=alpha)
        assert a is not None and (a.p_value < alpha) == (a.cs[0] > 0 or a.cs[1] < 0)
    # The sequential p-value is never below the fixed-horizon one at the same counts.
    fixed = tests.rate_test(x_t, n_t, x_c, n_c)
    assert isinstance(fixed, tests.TestResult) and s.p_value > fixed.p_value


def test_msprt_keeps_the_running_minimum_and_intersection() -> None:
    first = sequential.look(80, 500, 50, 500, tau=0.03)
    later = sequential.look(130, 1000, 120, 1000, tau=0.03, previous=first)
    assert first is not None and later is not None
    alone = sequential.look(130, 1000, 120, 1000, tau=0.03)
    assert alone is not None and later.p_value == first.p_value < alone.p_value
    assert later.cs[0] >= first.cs[0] and later.cs[1] <= first.cs[1]


@pytest.mark.parametrize(
    ("base", "n_t", "n_c"), [(0.01, 100, 100), (0.05, 1000, 1000), (0.3, 5000, 500)]
)
def test_mde_has_the_planned_power_by_statsmodels(base: float, n_t: int, n_c: int) -> None:
    mde = power.mde(base_rate=base, target=n_t, control=n_c)
    assert mde is not None and mde > 0
    achieved = power_proportions_2indep(mde, base, n_t, ratio=n_c / n_t).power
    assert achieved == pytest.approx(0.8, abs=1e-6)


def test_sample_size_is_the_smallest_with_the_power() -> None:
    result = power.sample_size(base_rate=0.05, effect=0.01, ratio=2.0)
    assert result is not None
    n_c, n_t = result
    assert power_proportions_2indep(0.01, 0.05, n_t, ratio=n_c / n_t).power >= 0.8
    assert power_proportions_2indep(0.01, 0.05, 2 * (n_c - 1), ratio=0.5).power < 0.8


def test_a_small_control_group_is_flagged() -> None:
    assert power.plan(base_rate=0.05, target=9_000, control=100).control_too_small
    assert not power.plan(base_rate=0.05, target=9_000, control=2_000).control_too_small
    assert power.mde(base_rate=0.5, target=1, control=1) is None


def _exact_prob_better(x_t: int, n_t: int, x_c: int, n_c: int) -> float:
    """P(p_t > p_c) for Beta(1+x, 1+n−x) posteriors, by Evan Miller's closed form."""
    a_t, b_t, a_c, b_c = 1 + x_t, 1 + n_t - x_t, 1 + x_c, 1 + n_c - x_c

    def lbeta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    return sum(
        math.exp(
            lbeta(a_c + i, b_c + b_t) - math.log(b_t + i) - lbeta(1 + i, b_t) - lbeta(a_c, b_c)
        )
        for i in range(a_t)
    )


@pytest.mark.parametrize(("x_t", "n_t", "x_c", "n_c"), [(20, 100, 10, 100), (3, 40, 4, 40)])
def test_bayes_probability_against_the_closed_form(x_t: int, n_t: int, x_c: int, n_c: int) -> None:
    posterior = bayes.compare(x_t, n_t, x_c, n_c)
    assert posterior is not None
    # Monte Carlo error of the probability is about 0.001.
    assert posterior.prob_better == pytest.approx(_exact_prob_better(x_t, n_t, x_c, n_c), abs=4e-3)
    assert posterior.expected_loss >= 0
    assert bayes.compare(x_t, n_t, x_c, n_c) == posterior  # seeded: the same every time
    assert bayes.compare(0, 0, 1, 2) is None
