"""A test that stays valid however often it is read: mSPRT with a normal mixture.

A fixed-horizon p-value is valid once, at the planned sample. Read every day and acted on at the
first p < 0.05, it calls a null campaign significant far more often than 5 % of the time. The
mixture sequential probability ratio test (Robbins 1970; Johari, Pekelis & Walsh, "Always valid
inference", 2017) avoids that: for the difference of rates ``d = p_t − p_c`` with estimate ``d̂``
and variance ``V = p_t(1−p_t)/n_t + p_c(1−p_c)/n_c``, and a normal mixture ``d ~ N(0, τ²)`` over
the alternatives, the likelihood ratio against ``d = θ`` is::

    Λ(θ) = sqrt(V / (V + τ²)) · exp(τ² (d̂ − θ)² / (2 V (V + τ²)))

By Ville's inequality the chance that ``Λ(0)`` *ever* reaches ``1/α`` under no effect is at most
``α``. So the **always-valid p-value** is the running minimum of ``min(1, 1/Λ(0))`` over the looks,
and the **confidence sequence** (every θ with ``Λ(θ) < 1/α``) is::

    d̂ ± sqrt(2 V (V + τ²) / τ² · (log(1/α) + ½ log((V + τ²) / V)))

intersected over the looks. They agree: the sequence excludes 0 exactly when p < α.

The mixing variance τ² is the **planned minimum detectable effect squared** (τ = MDE): the test is
most sensitive to effects of about the size the campaign was planned to detect.
Assumptions: the normal approximation to the rates (cells large enough: see ``tests.MIN_CELL``),
subscribers independent, responses observed in the order they arrive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from perkflow.insights.stats.intervals import Z95

DEFAULT_TAU = 0.01  # one point: the mixing sd when a campaign names no planned effect


@dataclass(frozen=True, slots=True)
class Sequential:
    """One look of the always-valid test."""

    p_value: float
    cs: tuple[float, float]
    tau: float

    def rejects(self, alpha: float) -> bool:
        """True when the evidence is enough at ``alpha``, however often it was read."""
        return self.p_value < alpha


def _variance(x_t: int, n_t: int, x_c: int, n_c: int) -> float:
    p_t, p_c = x_t / n_t, x_c / n_c
    return p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c


def look(
    x_t: int,
    n_t: int,
    x_c: int,
    n_c: int,
    *,
    tau: float,
    alpha: float = 0.05,
    previous: Sequential | None = None,
) -> Sequential | None:
    """The always-valid p-value and confidence sequence after this look; None if undefined.

    ``previous`` is the last look's result: the p-value is its running minimum and the sequence
    the running intersection.
    """
    if n_t <= 0 or n_c <= 0 or tau <= 0:
        return None
    var = _variance(x_t, n_t, x_c, n_c)
    if var <= 0:
        return previous
    d = x_t / n_t - x_c / n_c
    t2 = tau * tau
    log_lr = 0.5 * math.log(var / (var + t2)) + t2 * d * d / (2 * var * (var + t2))
    p = 1.0 if log_lr <= 0 else min(1.0, math.exp(-log_lr))
    half = math.sqrt(
        2 * var * (var + t2) / t2 * (math.log(1 / alpha) + 0.5 * math.log((var + t2) / var))
    )
    low, high = d - half, d + half
    if previous is not None:
        p = min(p, previous.p_value)
        low, high = max(low, previous.cs[0]), min(high, previous.cs[1])
        if low > high:  # the sequences no longer overlap: keep the last non-empty one
            low, high = previous.cs
    return Sequential(p_value=p, cs=(max(-1.0, low), min(1.0, high)), tau=tau)


def tau_for(mde: float | None) -> float:
    """The mixing sd from the planned minimum detectable effect (absolute, as a rate)."""
    return abs(mde) if mde else DEFAULT_TAU


__all__ = ["DEFAULT_TAU", "Z95", "Sequential", "look", "tau_for"]
