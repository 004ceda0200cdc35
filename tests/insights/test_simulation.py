"""Seeded simulations: the report's intervals cover, and its badges and gate keep their error rates.

Bands (stated here and in docs/insights.md), with ``mc`` the Monte Carlo standard error:

* Newcombe coverage of the uplift at every base rate (1 %, 5 %, 30 %) and size (20…5000 per cell),
  with no effect and with a doubled rate: at least 93 %; and at most 97 % + 2 mc wherever a cell
  expects 5 responders or more (smaller cells are conservative by design: 0/20 against 0/20 says
  "somewhere within ±16 points", which holds the truth);
* the badge's false-positive rate with no effect — one comparison, five variants after Holm,
  31 provinces after Benjamini–Hochberg (FDR, with and without real effects), ten looks through the
  sequential gate: at most 5 % + 2 mc;
* the revenue interval on zero-inflated lognormal spend (shape σ ≤ 2): 92 %…99 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from perkflow.insights.stats import intervals, multiplicity, revenue, sequential, simulate

BOUND = simulate.ALPHA


def _fpr_ok(f: simulate.Figure) -> bool:
    return f.value <= BOUND + 2 * f.mc_error


def test_vectorized_helpers_equal_the_scalar_methods() -> None:
    rng = np.random.default_rng(1)
    x_t, x_c = rng.binomial(40, 0.2, 50).astype(float), rng.binomial(40, 0.1, 50).astype(float)
    low, high = simulate.newcombe_np(x_t, 40, x_c, 40)
    for i in range(50):
        assert (low[i], high[i]) == pytest.approx(
            intervals.newcombe(int(x_t[i]), 40, int(x_c[i]), 40)
        )
    p = rng.uniform(0, 0.2, (20, 7))
    for row, holm, bh in zip(p, simulate.holm_np(p), simulate.bh_np(p), strict=True):
        assert list(holm) == pytest.approx(multiplicity.holm(list(row)))
        assert list(bh) == pytest.approx(multiplicity.benjamini_hochberg(list(row)))
    n = np.full(50, 400.0)
    x_t, x_c = rng.binomial(400, 0.2, 50).astype(float), rng.binomial(400, 0.15, 50).astype(float)
    for got, a, b in zip(simulate.msprt_np(x_t, n, x_c, n, 0.03), x_t, x_c, strict=True):
        look = sequential.look(int(a), 400, int(b), 400, tau=0.03)
        assert look is not None and got == pytest.approx(look.p_value)


@pytest.mark.parametrize("effect", ["none", "doubled"])
def test_uplift_interval_coverage_on_the_grid(effect: str) -> None:
    for base in simulate.BASE_RATES:
        for n in simulate.SIZES:
            f = simulate.ci_coverage(base, n, reps=3000, effect=base if effect == "doubled" else 0)
            assert f.value >= 0.93, f
            if n * base >= 5:
                assert f.value <= 0.97 + 2 * f.mc_error, f


def test_the_old_wald_interval_failed_where_the_new_one_holds() -> None:
    # With a doubled rate at 1 % and 100 per cell, Wald's interval covers far less than 95 %.
    rng = np.random.default_rng(3)
    x_t, x_c = rng.binomial(100, 0.02, 4000) / 100, rng.binomial(100, 0.01, 4000) / 100
    half = intervals.Z95 * np.sqrt(x_t * (1 - x_t) / 100 + x_c * (1 - x_c) / 100)
    wald = np.mean((x_t - x_c - half <= 0.01) & (x_t - x_c + half >= 0.01))
    assert wald < 0.9
    assert simulate.ci_coverage(0.01, 100, reps=4000, effect=0.01).value >= 0.95


def test_single_comparison_false_positives() -> None:
    for f in simulate.grid(lambda b, n: simulate.single_fpr(b, n, reps=3000)):
        assert _fpr_ok(f), f


def test_five_variants_after_holm() -> None:
    for f in simulate.grid(lambda b, n: simulate.variants_fwer(b, n, reps=1500)):
        assert _fpr_ok(f), f
    # Unadjusted, the same campaigns flag a variant far more often than 5 %.
    assert simulate.variants_unadjusted(0.30, 500, reps=1500).value > 0.12


def test_31_provinces_after_benjamini_hochberg() -> None:
    for f in simulate.grid(lambda b, n: simulate.provinces_fdr(b, n, reps=1000)):
        assert _fpr_ok(f), f
    for base in (0.05, 0.30):
        f = simulate.provinces_fdr(base, 500, real=10, reps=1000)
        assert _fpr_ok(f), f


def test_ten_looks_through_the_sequential_gate() -> None:
    for f in simulate.grid(lambda b, n: simulate.peeking_fpr(b, n, reps=3000)):
        assert _fpr_ok(f), f
    # Reading the fixed-horizon test at every look (the old gate) rolls out far more often.
    naive = simulate.peeking_fpr(0.30, 500, reps=3000, sequential_gate=False)
    assert naive.value > 0.12


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_revenue_interval_coverage_on_zero_inflated_spend(sigma: float) -> None:
    for lift in (1.0, 2.0):
        for spenders in (100, 400):
            f = simulate.revenue_coverage(spenders, sigma=sigma, lift=lift, reps=2000)
            assert f.reps > 300 and 0.92 <= f.value <= 0.99, f


def test_revenue_says_the_sample_is_too_small() -> None:
    few = revenue.Spend(contacts=5000, spenders=40, total_fen=400_000, total_sq_fen2=8e9)
    enough = revenue.Spend(contacts=5000, spenders=150, total_fen=1_500_000, total_sq_fen2=3e10)
    assert revenue.uplift(few, enough) is revenue.TooSmall.FEW_SPENDERS
    assert revenue.uplift(revenue.Spend(1, 1, 5, 25), enough) is revenue.TooSmall.EMPTY_CELL
    result = revenue.uplift(enough, enough)
    assert isinstance(result, revenue.RevenueUplift)
    assert result.ci95[0] < 0 < result.ci95[1]
