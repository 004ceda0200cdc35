"""CUPED: a sharper uplift from what each subscriber did before the campaign.

Some of the difference between two subscribers' responses was there before any message: a
subscriber who spent more last quarter responds differently this month, in either cell. CUPED
(Deng, Xu, Kohavi & Walker, 2013) removes the part of each outcome ``y`` that a pre-period
covariate ``x`` predicts, then compares the cells as usual::

    theta = (S_xy,t + S_xy,c) / (S_xx,t + S_xx,c)        (within-cell sums of cross-products)
    d_adj = (ȳ_t − ȳ_c) − theta · (x̄_t − x̄_c)
    var_adj,a = s²_y,a − 2 · theta · s_xy,a + theta² · s²_x,a     (per cell a)
    se_adj = sqrt(var_adj,t / n_t + var_adj,c / n_c),   d_adj ± z · se_adj

Theta is pooled over both cells *within* each cell (each cell's own means), so a true effect on
``y`` does not leak into it; this is the regression of ``y`` on ``x`` and the cell (ANCOVA).
Because ``x`` was fixed before assignment, random assignment makes ``x̄_t − x̄_c`` noise with mean
zero, so ``d_adj`` estimates the same uplift as the plain difference, with a smaller variance
when ``x`` predicts ``y``. The **variance reduction** is ``1 − se_adj² / se²`` of the plain
(unpooled) standard error on the same rows; it is about the squared correlation of ``x`` and
``y``. Theta is estimated from the same data; the normal interval treats it as known, which costs
nothing noticeable at the sizes allowed here (``MIN_N``), as the simulation checks.

Not enough data — no number — when a cell has fewer than ``MIN_N`` rows, ``x`` does not vary, or
``y`` does not vary in a cell. Pure arithmetic on each cell's sufficient statistics
(``n, Σx, Σx², Σy, Σy², Σxy``): the engine sums them, no rows are read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from perkflow.insights.stats.intervals import Z95

MIN_N = 100  # rows per cell: below this the normal interval is not trusted


class TooLittle(StrEnum):
    """Why there is no CUPED figure."""

    TINY_CELL = "tiny_cell"
    NO_COVARIATE_VARIATION = "no_covariate_variation"
    NO_VARIATION = "no_variation"


@dataclass(frozen=True, slots=True)
class Moments:
    """One cell's sufficient statistics: rows, and the sums of x, x², y, y² and x·y."""

    n: int
    sx: float
    sxx: float
    sy: float
    syy: float
    sxy: float

    def _centred(self) -> tuple[float, float, float]:
        """Within-cell sums of squares and cross-products: (S_xx, S_yy, S_xy)."""
        n = self.n
        return (
            max(self.sxx - self.sx * self.sx / n, 0.0),
            max(self.syy - self.sy * self.sy / n, 0.0),
            self.sxy - self.sx * self.sy / n,
        )


@dataclass(frozen=True, slots=True)
class Cuped:
    """The plain and the CUPED-adjusted difference of means, with intervals and the gain."""

    theta: float
    plain: float
    plain_se: float
    plain_ci95: tuple[float, float]
    adjusted: float
    adjusted_se: float
    adjusted_ci95: tuple[float, float]
    p_value: float
    variance_reduction: float  # 1 − se_adj² / se²; negative when x only adds noise


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def adjust(target: Moments, control: Moments, *, z: float = Z95) -> Cuped | TooLittle:
    """The CUPED comparison of a target cell with its control, or why there is none."""
    if min(target.n, control.n) < MIN_N:
        return TooLittle.TINY_CELL
    sxx_t, syy_t, sxy_t = target._centred()
    sxx_c, syy_c, sxy_c = control._centred()
    if sxx_t + sxx_c <= 0:
        return TooLittle.NO_COVARIATE_VARIATION
    if syy_t <= 0 or syy_c <= 0:
        return TooLittle.NO_VARIATION
    theta = (sxy_t + sxy_c) / (sxx_t + sxx_c)
    n_t, n_c = target.n, control.n
    plain = target.sy / n_t - control.sy / n_c
    adjusted = plain - theta * (target.sx / n_t - control.sx / n_c)
    plain_var = syy_t / (n_t - 1) / n_t + syy_c / (n_c - 1) / n_c

    def adj_var(sxx: float, syy: float, sxy: float, n: int) -> float:
        return max(syy - 2 * theta * sxy + theta * theta * sxx, 0.0) / (n - 1) / n

    var = adj_var(sxx_t, syy_t, sxy_t, n_t) + adj_var(sxx_c, syy_c, sxy_c, n_c)
    se, plain_se = math.sqrt(var), math.sqrt(plain_var)
    p = _two_sided_p(adjusted / se) if se > 0 else (0.0 if adjusted else 1.0)
    return Cuped(
        theta=theta,
        plain=plain,
        plain_se=plain_se,
        plain_ci95=(plain - z * plain_se, plain + z * plain_se),
        adjusted=adjusted,
        adjusted_se=se,
        adjusted_ci95=(adjusted - z * se, adjusted + z * se),
        p_value=p,
        variance_reduction=1.0 - var / plain_var,
    )


def moments(xs: list[float], ys: list[float]) -> Moments:
    """A cell's statistics from its rows (for tests and small inputs; the engine sums its own)."""
    if len(xs) != len(ys):
        raise ValueError("x and y have one value per row")
    return Moments(
        n=len(xs),
        sx=float(sum(xs)),
        sxx=float(sum(x * x for x in xs)),
        sy=float(sum(ys)),
        syy=float(sum(y * y for y in ys)),
        sxy=float(sum(x * y for x, y in zip(xs, ys, strict=True))),
    )
