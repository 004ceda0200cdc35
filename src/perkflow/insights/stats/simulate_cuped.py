"""Seeded simulations of CUPED and of the breakdowns; ``python -m`` prints the figures.

CUPED: each experiment draws ``n`` subscribers per cell with a lognormal pre-period bill ``x``
(median about 74 yuan, like the operator's bills) and a response whose chance rises with the
bill by ``strength`` (0: the bill says nothing; 1.5: a strong predictor), at a base rate of 5 %
or 30 %, with the target's chance raised by ``effect``. Every experiment goes through
``cuped.adjust`` and the same small-count gate as the report (``pre_period``). The figures are
the interval's coverage of the true effect, the false-positive rate with no effect, the mean
variance reduction and the width of the CUPED interval against the plain one.

Breakdowns: a campaign's targets and controls split into groups of unequal size and base rate
(plan bands: 3, activity groups: 4) with no effect anywhere (or a real one in one group); each
breakdown's p-values adjusted by Benjamini–Hochberg as the report does. The figure is the share
of campaigns where some group of a breakdown is called significant falsely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perkflow.insights.stats import cuped, tests
from perkflow.insights.stats.simulate import ALPHA, SEED, Figure, bh_np
from perkflow.insights.stats.simulate import _p_value as p_value

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

CUPED_SIZES = (200, 2000)
CUPED_BASES = (0.05, 0.30)
CUPED_STRENGTHS = (0.0, 1.5)
# Groups of a breakdown: share of the list and base rate (plan bands; activity groups).
PLAN_GROUPS = ((0.39, 0.04), (0.43, 0.06), (0.18, 0.09))
ACTIVITY_GROUPS = ((0.2, 0.12), (0.4, 0.06), (0.3, 0.03), (0.1, 0.01))


@dataclass(frozen=True, slots=True)
class CupedFigures:
    """What ``reps`` simulated experiments of one setting gave."""

    n: int
    base: float
    strength: float
    effect: float
    coverage: Figure  # share of CUPED intervals holding the true effect
    rejected: Figure  # share called significant (the false-positive rate when effect is 0)
    variance_reduction: float  # mean over the experiments with a figure
    width_ratio: float  # mean CUPED interval width / mean plain interval width
    not_enough: float  # share of experiments without a figure


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def cuped_figures(
    n: int, base: float, strength: float, *, effect: float = 0.0, reps: int = 2000
) -> CupedFigures:
    """CUPED over ``reps`` experiments of ``n`` subscribers per cell (see the module's note)."""
    import numpy as np

    rng = np.random.default_rng([SEED, n, int(base * 100), int(strength * 10), int(effect * 1e4)])
    z = rng.standard_normal((2, reps, n))
    x = np.exp(4.3 + 0.5 * z)
    # The chance of responding: rises with the bill; capped so the effect is never cut off.
    p = np.minimum(1 / (1 + np.exp(-(_logit(base) + strength * z))), 0.9)
    p[0] += effect
    y = (rng.random((2, reps, n)) < p).astype(float)
    sums = [
        (x[a].sum(1), (x[a] ** 2).sum(1), y[a].sum(1), (y[a] ** 2).sum(1), (x[a] * y[a]).sum(1))
        for a in (0, 1)
    ]
    hits = rejected = given = 0
    reduction: list[float] = []
    widths: list[tuple[float, float]] = []
    for r in range(reps):
        t, c = (cuped.Moments(n, *(float(s[r]) for s in sums[a])) for a in (0, 1))
        x_t, x_c = round(t.sy), round(c.sy)
        if tests.not_enough_data(x_t, n, x_c, n) or not tests.large_enough_for_z(x_t, n, x_c, n):
            continue
        result = cuped.adjust(t, c)
        if isinstance(result, cuped.TooLittle):
            continue
        given += 1
        low, high = result.adjusted_ci95
        hits += low <= effect <= high
        rejected += result.p_value < ALPHA
        reduction.append(result.variance_reduction)
        widths.append((high - low, result.plain_ci95[1] - result.plain_ci95[0]))
    share = given / reps
    coverage = Figure("cuped_coverage", base, n, hits / given if given else math.nan, given)
    rej = Figure("cuped_rejected", base, n, rejected / given if given else math.nan, given)
    ratio = math.nan
    if widths:
        ratio = float(np.mean([w for w, _ in widths]) / np.mean([w for _, w in widths]))
    return CupedFigures(
        n=n,
        base=base,
        strength=strength,
        effect=effect,
        coverage=coverage,
        rejected=rej,
        variance_reduction=float(np.mean(reduction)) if reduction else math.nan,
        width_ratio=ratio,
        not_enough=1 - share,
    )


def breakdown_false_rate(
    groups: tuple[tuple[float, float], ...],
    *,
    targets: int,
    controls: int,
    adjusted: bool = True,
    real: float = 0.0,
    reps: int = 4000,
) -> Figure:
    """Share of campaigns where a group without an effect is called significant.

    ``real`` is a true uplift given to the first group only; it is never counted as false. With
    ``real`` 0 this is the chance of any false "significant" row (with BH, at most alpha); with a
    real effect, the false discovery proportion's mean (BH's false discovery rate).
    """
    import numpy as np

    rng = np.random.default_rng([SEED, targets, controls, len(groups), int(real * 1e4), 8])
    shares = np.array([s for s, _ in groups])
    rates = np.array([b for _, b in groups])
    n_t = rng.multinomial(targets, shares / shares.sum(), reps)
    n_c = rng.multinomial(controls, shares / shares.sum(), reps)
    lifted = rates.copy()
    lifted[0] += real
    x_t = rng.binomial(n_t, lifted)
    x_c = rng.binomial(n_c, rates)
    p = np.stack(
        [_group_p(x_t[:, g], n_t[:, g], x_c[:, g], n_c[:, g]) for g in range(len(groups))],
        axis=1,
    )
    flagged = (bh_np(p) if adjusted else np.nan_to_num(p, nan=1.0)) < ALPHA
    false = flagged[:, 1:].sum(1) if real else flagged.sum(1)
    called = flagged.sum(1)
    if real:
        value = float(np.mean(np.where(called > 0, false / np.maximum(called, 1), 0.0)))
    else:
        value = float(np.mean(false > 0))
    name = f"breakdown_{len(groups)}groups_{'bh' if adjusted else 'raw'}"
    return Figure(name, float(rates.mean()), targets + controls, value, reps)


def _group_p(x_t: Array, n_t: Array, x_c: Array, n_c: Array) -> Array:
    """The report's p-values (NaN: not enough data) of cells whose sizes differ."""
    import numpy as np

    flat = zip(x_t.ravel(), n_t.ravel(), x_c.ravel(), n_c.ravel(), strict=True)
    values = [p_value(int(a), int(b), int(c), int(d)) for a, b, c, d in flat]
    return np.array(values).reshape(x_t.shape)


def main() -> None:
    """Print the figures (``python -m perkflow.insights.stats.simulate_cuped``)."""
    print(f"{'n':>6}{'base':>6}{'strength':>9}{'effect':>7}{'cover':>7}{'reject':>7}"
          f"{'reduced':>8}{'width':>7}{'nodata':>7}")  # fmt: skip
    for n in CUPED_SIZES:
        for base in CUPED_BASES:
            for strength in CUPED_STRENGTHS:
                for effect in (0.0, 0.02):
                    f = cuped_figures(n, base, strength, effect=effect)
                    print(
                        f"{n:>6}{base:>6.2f}{strength:>9.1f}{effect:>7.2f}"
                        f"{f.coverage.value:>7.3f}{f.rejected.value:>7.3f}"
                        f"{f.variance_reduction:>8.3f}{f.width_ratio:>7.3f}{f.not_enough:>7.3f}"
                    )
    for name, groups in (("plan bands", PLAN_GROUPS), ("activity", ACTIVITY_GROUPS)):
        for targets, controls in ((2000, 500), (20000, 5000)):
            raw = breakdown_false_rate(groups, targets=targets, controls=controls, adjusted=False)
            bh = breakdown_false_rate(groups, targets=targets, controls=controls)
            fdr = breakdown_false_rate(groups, targets=targets, controls=controls, real=0.05)
            print(
                f"{name:<11}{targets:>6}/{controls:<6} any false: raw {raw.value:.3f}, "
                f"BH {bh.value:.3f} ± {bh.mc_error:.3f}; FDR with one real {fdr.value:.3f}"
            )


if __name__ == "__main__":
    main()
