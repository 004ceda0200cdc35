"""Seeded simulations that check the methods' error rates; ``python -m`` prints the figures.

Every figure the documentation quotes comes from here, and ``tests/insights/test_simulation.py``
holds them to their bands. The helpers are numpy versions of the scalar methods (checked equal to
them in the tests), so thousands of experiments run in a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from perkflow.insights.stats import revenue, sequential, tests
from perkflow.insights.stats.intervals import Z95

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[Any]

ALPHA = 0.05
BASE_RATES = (0.01, 0.05, 0.30)
SIZES = (20, 100, 500, 5000)
SEED = 14
REVENUE_SHAPES = (1.0, 1.5, 2.0, 2.5)


def wilson_np(x: Array, n: float) -> tuple[Array, Array]:
    """Wilson intervals of many ``x / n`` at once."""
    import numpy as np

    p = x / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


def newcombe_np(x_t: Array, n_t: float, x_c: Array, n_c: float) -> tuple[Array, Array]:
    """Newcombe intervals of many differences at once (the same formula as ``intervals``)."""
    import numpy as np

    lt, ut = wilson_np(x_t, n_t)
    lc, uc = wilson_np(x_c, n_c)
    pt, pc = x_t / n_t, x_c / n_c
    d = pt - pc
    low = d - np.sqrt((pt - lt) ** 2 + (uc - pc) ** 2)
    high = d + np.sqrt((ut - pt) ** 2 + (pc - lc) ** 2)
    return np.maximum(-1.0, low), np.minimum(1.0, high)


@cache
def _p_value(x_t: int, n_t: int, x_c: int, n_c: int) -> float:
    result = tests.rate_test(x_t, n_t, x_c, n_c)
    return result.p_value if isinstance(result, tests.TestResult) else math.nan


def p_values_np(x_t: Array, n_t: int, x_c: Array, n_c: int) -> Array:
    """The report's p-values (z, Fisher, or NaN for not enough data) for many tables at once."""
    import numpy as np

    pairs = np.stack([x_t.astype(np.int64), x_c.astype(np.int64)], axis=-1).reshape(-1, 2)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    values = np.array([_p_value(int(a), n_t, int(b), n_c) for a, b in unique])
    return values[inverse.reshape(-1)].reshape(x_t.shape)


def holm_np(p: Array) -> Array:
    """Holm-adjusted p-values along the last axis (NaN, not enough data, counts as 1)."""
    import numpy as np

    p = np.where(np.isnan(p), 1.0, p)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def bh_np(p: Array) -> Array:
    """Benjamini–Hochberg adjusted p-values along the last axis (NaN counts as 1)."""
    import numpy as np

    p = np.where(np.isnan(p), 1.0, p)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * m / (np.arange(m) + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1])
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def msprt_np(x_t: Array, n_t: Array, x_c: Array, n_c: Array, tau: float) -> Array:
    """Always-valid p-values of one look for many experiments (before the running minimum)."""
    import numpy as np

    pt, pc = x_t / n_t, x_c / n_c
    var = pt * (1 - pt) / n_t + pc * (1 - pc) / n_c
    t2 = tau * tau
    safe = np.where(var > 0, var, 1.0)
    log_lr = 0.5 * np.log(safe / (safe + t2)) + t2 * (pt - pc) ** 2 / (2 * safe * (safe + t2))
    return np.where((var > 0) & (log_lr > 0), np.exp(-np.clip(log_lr, 0, None)), 1.0)


# ---- the checks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """One simulated rate with its Monte Carlo standard error."""

    name: str
    base_rate: float
    n: int
    value: float
    reps: int

    @property
    def mc_error(self) -> float:
        """The binomial standard error of a simulated proportion."""
        if not self.reps or math.isnan(self.value):
            return math.nan
        return math.sqrt(max(self.value * (1 - self.value), 0.05 * 0.95) / self.reps)


def ci_coverage(base: float, n: int, *, reps: int = 4000, effect: float = 0.0) -> Figure:
    """Share of Newcombe intervals that contain the true difference."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 1])
    p_t = min(1.0, base + effect)
    x_t = rng.binomial(n, p_t, reps).astype(float)
    x_c = rng.binomial(n, base, reps).astype(float)
    low, high = newcombe_np(x_t, n, x_c, n)
    truth = p_t - base
    return Figure("ci_coverage", base, n, float(np.mean((low <= truth) & (truth <= high))), reps)


def wald_coverage(base: float, n: int, *, reps: int = 4000) -> Figure:
    """The old Wald interval's coverage at no effect, for contrast."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 1])
    x_t = rng.binomial(n, base, reps) / n
    x_c = rng.binomial(n, base, reps) / n
    half = Z95 * np.sqrt(x_t * (1 - x_t) / n + x_c * (1 - x_c) / n)
    d = x_t - x_c
    return Figure("wald_coverage", base, n, float(np.mean((d - half <= 0) & (d + half >= 0))), reps)


def single_fpr(base: float, n: int, *, reps: int = 4000) -> Figure:
    """Share of null comparisons the badge calls significant."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 2])
    p = p_values_np(rng.binomial(n, base, reps), n, rng.binomial(n, base, reps), n)
    return Figure("single_fpr", base, n, float(np.mean(p < ALPHA)), reps)


def variants_fwer(base: float, n: int, *, variants: int = 5, reps: int = 2000) -> Figure:
    """Share of null campaigns with 5 variants (one shared control) where Holm flags any."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 3])
    x_c = np.repeat(rng.binomial(n, base, (reps, 1)), variants, axis=1)
    p = p_values_np(rng.binomial(n, base, (reps, variants)), n, x_c, n)
    return Figure("variants_fwer", base, n, float(np.mean((holm_np(p) < ALPHA).any(axis=1))), reps)


def variants_unadjusted(base: float, n: int, *, variants: int = 5, reps: int = 2000) -> Figure:
    """The same campaigns read without adjustment, for contrast."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 3])
    x_c = np.repeat(rng.binomial(n, base, (reps, 1)), variants, axis=1)
    p = p_values_np(rng.binomial(n, base, (reps, variants)), n, x_c, n)
    return Figure("variants_raw", base, n, float(np.mean((p < ALPHA).any(axis=1))), reps)


def provinces_fdr(
    base: float, n: int, *, provinces: int = 31, real: int = 0, reps: int = 2000
) -> Figure:
    """False discovery rate of BH over 31 provinces (``real`` of them with a true effect)."""
    import numpy as np

    rng = np.random.default_rng([SEED, int(base * 1000), n, 4, real])
    rates = np.full(provinces, base)
    effect = max(0.02, base * 0.5)
    rates[:real] = min(1.0, base + effect)
    p = p_values_np(
        rng.binomial(n, rates, (reps, provinces)), n, rng.binomial(n, base, (reps, provinces)), n
    )
    flagged = bh_np(p) < ALPHA
    false = flagged[:, real:].sum(axis=1)
    fdp = np.where(flagged.sum(axis=1) > 0, false / np.maximum(flagged.sum(axis=1), 1), 0.0)
    return Figure(f"provinces_fdr_{real}real", base, n, float(np.mean(fdp)), reps)


def peeking_fpr(
    base: float, n: int, *, looks: int = 10, reps: int = 4000, sequential_gate: bool = True
) -> Figure:
    """Share of null campaigns rolled out when read at ``looks`` equal steps up to ``n`` per cell.

    With ``sequential_gate`` the gate reads the always-valid p-value (τ = the planned MDE at
    ``n``); without, the fixed-horizon p-value at every look (the old behaviour).
    """
    import numpy as np

    from perkflow.insights.stats import power

    rng = np.random.default_rng([SEED, int(base * 1000), n, 5])
    steps = np.diff(np.linspace(0, n, looks + 1).round().astype(int))
    x_t = np.cumsum(rng.binomial(steps, base, (reps, looks)), axis=1).astype(float)
    x_c = np.cumsum(rng.binomial(steps, base, (reps, looks)), axis=1).astype(float)
    sizes = np.cumsum(steps).astype(float)
    if sequential_gate:
        tau = sequential.tau_for(power.mde(base_rate=base, target=n, control=n))
        p = msprt_np(x_t, sizes, x_c, sizes, tau)
        small = sizes < tests.MIN_CELL
        p = np.where(small, 1.0, p)
        rolled: Any = np.minimum.accumulate(p, axis=1)[:, -1] < ALPHA
    else:
        p = np.stack(
            [p_values_np(x_t[:, k], int(sizes[k]), x_c[:, k], int(sizes[k])) for k in range(looks)],
            axis=1,
        )
        rolled = (np.nan_to_num(p, nan=1.0) < ALPHA).any(axis=1)
    name = "sequential_fpr" if sequential_gate else "peeking_fixed_fpr"
    return Figure(name, base, n, float(np.mean(rolled)), reps)


def _spend_sums(
    rng: np.random.Generator, n: int, rate: float, mu: float, sigma: float, reps: int
) -> tuple[Array, Array, Array]:
    """Spenders, total and total of squares of ``reps`` cells of n: a share spends lognormally."""
    import numpy as np

    k = rng.binomial(n, rate, reps)
    v = rng.lognormal(mu, sigma, int(k.sum()))
    ends = np.cumsum(k)
    c1 = np.concatenate(([0.0], np.cumsum(v)))
    c2 = np.concatenate(([0.0], np.cumsum(v * v)))
    return k.astype(float), c1[ends] - c1[ends - k], c2[ends] - c2[ends - k]


def revenue_coverage(
    spenders: int, *, sigma: float = 1.5, lift: float = 1.5, n: int = 20_000, reps: int = 4000
) -> Figure:
    """Share of revenue intervals (given ``MIN_SPENDERS``) holding the true difference.

    The control's spend rate is ``spenders / n``, the target's ``lift`` times it; amounts are
    lognormal(8, σ) fen. ``reps`` counts the experiments large enough to give an interval.
    """
    import numpy as np

    rng = np.random.default_rng([SEED, spenders, int(sigma * 10), int(lift * 10), 6])
    rate, mu = spenders / n, 8.0
    truth = (lift - 1) * rate * math.exp(mu + sigma * sigma / 2)
    kt, st, qt = _spend_sums(rng, n, lift * rate, mu, sigma, reps)
    kc, sc, qc = _spend_sums(rng, n, rate, mu, sigma, reps)
    mt, mc = st / n, sc / n
    se = np.sqrt((qt - n * mt * mt) / (n - 1) / n + (qc - n * mc * mc) / (n - 1) / n)
    d = mt - mc
    given = (kt >= revenue.MIN_SPENDERS) & (kc >= revenue.MIN_SPENDERS)
    hit = (d - Z95 * se <= truth) & (truth <= d + Z95 * se)
    name = f"revenue_cov_s{sigma:g}_x{lift:g}"
    value = float(hit[given].mean()) if given.any() else math.nan
    return Figure(name, rate, n, value, int(given.sum()))


def _resampled(rng: np.random.Generator, values: Array, n: int, reps: int) -> tuple[Array, Array]:
    """Mean and variance per contact of bootstrap resamples of a zero-inflated cell.

    Exact and fast: a resample's number of spenders is Binomial(n, k/n), drawn from the k.
    """
    import numpy as np

    k = values.size
    spenders = rng.binomial(n, k / n, reps)
    drawn = values[rng.integers(0, k, int(spenders.sum()))]
    ends = np.cumsum(spenders)
    c1 = np.concatenate(([0.0], np.cumsum(drawn)))
    c2 = np.concatenate(([0.0], np.cumsum(drawn * drawn)))
    mean = (c1[ends] - c1[ends - spenders]) / n
    var = np.maximum(c2[ends] - c2[ends - spenders] - n * mean * mean, 0.0) / (n - 1)
    return mean, var


def bootstrap_t_revenue_coverage(
    spenders: int, *, sigma: float = 1.5, lift: float = 1.5, n: int = 20_000, reps: int = 300
) -> Figure:
    """The studentized bootstrap (999 resamples) on the same kind of experiments, for contrast."""
    import numpy as np

    rng = np.random.default_rng([SEED, spenders, int(sigma * 10), int(lift * 10), 7])
    rate, mu = spenders / n, 8.0
    truth = (lift - 1) * rate * math.exp(mu + sigma * sigma / 2)
    hits = given = 0
    for _ in range(reps):
        vt = rng.lognormal(mu, sigma, rng.binomial(n, lift * rate))
        vc = rng.lognormal(mu, sigma, rng.binomial(n, rate))
        if min(vt.size, vc.size) < revenue.MIN_SPENDERS:
            continue
        d = vt.sum() / n - vc.sum() / n
        var_t = ((vt**2).sum() - n * (vt.sum() / n) ** 2) / (n - 1)
        var_c = ((vc**2).sum() - n * (vc.sum() / n) ** 2) / (n - 1)
        se = math.sqrt(var_t / n + var_c / n)
        bt, bvt = _resampled(rng, vt, n, 999)
        bc, bvc = _resampled(rng, vc, n, 999)
        t = (bt - bc - d) / np.sqrt(bvt / n + bvc / n)
        lo_q, hi_q = np.quantile(t, [0.025, 0.975])
        given += 1
        hits += d - hi_q * se <= truth <= d - lo_q * se
    name = f"boot_t_cov_s{sigma:g}_x{lift:g}"
    return Figure(name, rate, n, hits / given if given else math.nan, given)


def grid(check: Callable[[float, int], Figure]) -> list[Figure]:
    """One check over every base rate and size."""
    return [check(base, n) for base in BASE_RATES for n in SIZES]


def main() -> None:
    """Print every figure as a table (``python -m perkflow.insights.stats.simulate``)."""
    rows: list[Figure] = []
    for check in (ci_coverage, wald_coverage, single_fpr, variants_unadjusted, variants_fwer):
        rows += grid(check)
    rows += grid(provinces_fdr)
    rows += [provinces_fdr(0.05, 500, real=10), provinces_fdr(0.30, 500, real=10)]
    rows += grid(lambda b, n: peeking_fpr(b, n, sequential_gate=False))
    rows += grid(peeking_fpr)
    for sigma in REVENUE_SHAPES:
        for lift in (1.0, 1.5, 2.0):
            rows += [revenue_coverage(k, sigma=sigma, lift=lift) for k in (100, 200, 1000)]
    rows += [bootstrap_t_revenue_coverage(k, sigma=s) for k in (100, 400) for s in (1.5, 2.0)]
    print("rate: the base (control) rate; for revenue, spenders per contact in the control")
    print(f"{'check':<26}{'rate':>7}{'n':>7}{'value':>8}{'± mc':>7}{'reps':>6}")
    for f in rows:
        print(
            f"{f.name:<26}{f.base_rate:>7.3f}{f.n:>7}{f.value:>8.3f}{f.mc_error:>7.3f}{f.reps:>6}"
        )


if __name__ == "__main__":
    main()
