"""Before a campaign starts: what it can detect, and how many subscribers it needs.

For the two-sided two-proportion z-test at level α with power 1 − β, a target cell of ``n_t``, a
control of ``n_c`` and a base (control) rate ``p``, the **minimum detectable effect** is the
smallest absolute uplift ``δ`` with::

    δ = z_{1−α/2} · sqrt(p̄(1−p̄)(1/n_t + 1/n_c)) + z_{1−β} · sqrt(p(1−p)/n_c + q(1−q)/n_t)

where ``q = p + δ`` and ``p̄`` the pooled rate (solved by fixed-point iteration); the **sample
needed** for a chosen ``δ`` is the smallest control size (the target ``ratio`` times it) with that
power. Same figures as statsmodels ``power_proportions_2indep``. Assumptions: random assignment,
the normal approximation, and a base rate that is a fair guess — from the segment's history when
there is one, otherwise ``DEFAULT_BASE_RATE``, and the page says which.

The control group is **too small** when it expects fewer than ``MIN_CONTROL_RESPONDERS``
responders at the base rate, or when the effect it can detect is larger than the base rate itself
(the campaign would have to double the response rate to be seen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_BASE_RATE = 0.05
MIN_CONTROL_RESPONDERS = 20
POWER = 0.8


@dataclass(frozen=True, slots=True)
class Power:
    """What a planned split can detect."""

    base_rate: float
    target: int
    control: int
    mde: float | None
    control_too_small: bool


def _z(q: float) -> float:
    from scipy.stats import norm  # imported where used: scipy takes a second to import

    return float(norm.ppf(q))


def _power_gap(delta: float, p: float, n_t: float, n_c: float, za: float, zb: float) -> float:
    q = min(1.0, p + delta)
    pooled = (p * n_c + q * n_t) / (n_t + n_c)
    null_sd = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    alt_sd = math.sqrt(p * (1 - p) / n_c + q * (1 - q) / n_t)
    return za * null_sd + zb * alt_sd - delta


def mde(
    *, base_rate: float, target: int, control: int, alpha: float = 0.05, power: float = POWER
) -> float | None:
    """The smallest absolute uplift detected with the given power; None if none can be."""
    if target <= 0 or control <= 0 or not 0 < base_rate < 1:
        return None
    from scipy.optimize import brentq

    za, zb = _z(1 - alpha / 2), _z(power)
    top = 1 - base_rate
    if _power_gap(top, base_rate, target, control, za, zb) > 0:
        return None  # not even a rise to 100 % could be told apart
    return float(brentq(_power_gap, 1e-12, top, args=(base_rate, target, control, za, zb)))


def sample_size(
    *,
    base_rate: float,
    effect: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
    power: float = POWER,
) -> tuple[int, int] | None:
    """Control and target sizes (target = ratio × control) that detect ``effect``; None if none."""
    if not 0 < base_rate < 1 or not 0 < base_rate + effect <= 1 or effect <= 0 or ratio <= 0:
        return None
    za, zb = _z(1 - alpha / 2), _z(power)
    low, high = 1, 1
    while _power_gap(effect, base_rate, ratio * high, high, za, zb) > 0:
        high *= 2
        if high > 10**10:
            return None
    while low < high:  # the smallest control size whose gap is <= 0
        mid = (low + high) // 2
        if _power_gap(effect, base_rate, ratio * mid, mid, za, zb) > 0:
            low = mid + 1
        else:
            high = mid
    return high, math.ceil(ratio * high)


def plan(*, base_rate: float, target: int, control: int, alpha: float = 0.05) -> Power:
    """The MDE of a split and whether its control group is too small."""
    detectable = mde(base_rate=base_rate, target=target, control=control, alpha=alpha)
    too_small = (
        control * base_rate < MIN_CONTROL_RESPONDERS or detectable is None or detectable > base_rate
    )
    return Power(base_rate, target, control, detectable, too_small)
