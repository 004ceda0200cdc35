"""How an evaluation's comparisons read in the report: pure functions over ``rules.Comparison``.

What the report shows beside each uplift, and what it refuses to claim:

* the raw p-value, and where several comparisons are read at once the **adjusted** one — Holm
  across variants, Benjamini–Hochberg across provinces — with the badge reading the adjusted one;
* **not enough data** instead of a p-value for an empty or tiny cell or no variation, and never
  "significant" there;
* the **sequential** (always-valid) p-value and confidence sequence, the one the rollout gate
  reads, and the **planned sample** with the progress to it: the fixed-horizon p-value is final
  only once the planned sample is reached, and preliminary before;
* incremental revenue per target with its interval, or **sample too small**;
* the **Bayesian** summary (probability the target is better, expected loss) beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perkflow.insights import rules
from perkflow.insights.rules import Comparison
from perkflow.insights.stats import bayes, gate, multiplicity, power, sequential

HOLM = "holm"
BH = "benjamini-hochberg"
NOT_ENOUGH_DATA = "not enough data"
# The planned effect when a campaign names none: a fifth more responders than the base rate.
PLANNED_RELATIVE_EFFECT = 0.2

METHODS = {
    "interval": "newcombe",
    "single_rate_interval": "wilson",
    "test": "z (every expected count >= 5) | fisher (smaller) | not enough data",
    "variants_adjustment": HOLM,
    "provinces_adjustment": BH,
    "badge_reads": "adjusted",
    "sequential": "msprt-normal-mixture",
    "revenue_interval": "welch (at least 100 spenders a cell)",
    "bayes": "beta-binomial, uniform prior",
}


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return [ci[0], ci[1]] if ci is not None else None


def adjust(comparisons: Sequence[Comparison], method: str) -> list[float | None]:
    """Adjusted p-values of comparisons read together (None where there is no p-value)."""
    raw = [c.p_value for c in comparisons]
    if method == HOLM:
        return multiplicity.holm(raw)
    return multiplicity.benjamini_hochberg(raw)


def significant(c: Comparison, adjusted: float | None = None, *, adjusted_by: str | None) -> bool:
    """The badge: the adjusted p-value when there is an adjustment, else the raw one."""
    p = adjusted if adjusted_by is not None else c.p_value
    return p is not None and p < rules.ALPHA


def verdict(c: Comparison, adjusted: float | None = None, *, adjusted_by: str | None = None) -> str:
    """``significant``, ``not significant`` or ``not enough data``."""
    if c.not_enough_data is not None:
        return NOT_ENOUGH_DATA
    return "significant" if significant(c, adjusted, adjusted_by=adjusted_by) else "not significant"


def bayes_dict(c: Comparison) -> dict[str, Any] | None:
    """Probability the target beats the control and the expected loss of choosing it."""
    t, k = c.target, c.control
    posterior = bayes.compare(t.responders, t.contacts, k.responders, k.contacts)
    if posterior is None:
        return None
    return {"prob_better": posterior.prob_better, "expected_loss": posterior.expected_loss}


def uplift_dict(
    c: Comparison, adjusted: float | None = None, *, adjusted_by: str | None = None
) -> dict[str, Any]:
    """The uplift, its interval, the test (raw and adjusted p) and the Bayesian summary."""
    return {
        "absolute": c.absolute,
        "relative": c.relative,
        "ci95": _pair(c.ci95),
        "ci_method": "newcombe",
        "relative_ci95": _pair(c.relative_ci95),
        "z": c.z,
        "test": c.test,
        "not_enough_data": c.not_enough_data,
        "p_value": c.p_value,
        "p_value_adjusted": adjusted if adjusted_by is not None else None,
        "adjustment": adjusted_by,
        "badge_reads": "adjusted" if adjusted_by is not None else "raw",
        "significant": significant(c, adjusted, adjusted_by=adjusted_by),
        "bayes": bayes_dict(c),
    }


def incremental_dict(c: Comparison) -> dict[str, Any]:
    """Incremental responses and revenue, each with its interval or why there is none."""
    n = c.target.contacts
    per = c.revenue_per_target_fen
    ci = c.revenue_per_target_ci95
    return {
        "responses": c.incremental_responses,
        "responses_ci95": _pair(c.incremental_ci95),
        "revenue_fen": c.incremental_revenue_fen,
        "revenue_per_target_fen": per,
        "revenue_ci95": [ci[0] * n, ci[1] * n] if ci is not None else None,
        "revenue_interval": "welch" if ci is not None else c.revenue_note,
    }


def plan_dict(c: Comparison, *, base_rate: float | None = None) -> dict[str, Any]:
    """The planned sample (the default base rate and effect unless given) and progress to it."""
    rate = base_rate if base_rate is not None else power.DEFAULT_BASE_RATE
    effect = rate * PLANNED_RELATIVE_EFFECT
    n_t, n_c = c.target.contacts, c.control.contacts
    ratio = n_t / n_c if n_c else 1.0
    needed = power.sample_size(base_rate=rate, effect=effect, ratio=ratio) if ratio > 0 else None
    progress = None
    if needed is not None:
        progress = min(1.0, n_c / needed[0]) if needed[0] else 1.0
    split = power.plan(base_rate=rate, target=n_t, control=n_c)
    return {
        "base_rate": rate,
        "base_rate_source": "default" if base_rate is None else "history",
        "effect": effect,
        "control_needed": needed[0] if needed else None,
        "target_needed": needed[1] if needed else None,
        "progress": progress,
        "reached": progress is not None and progress >= 1.0,
        "mde": split.mde,
        "control_too_small": split.control_too_small,
    }


def sequential_dict(c: Comparison, *, base_rate: float | None = None) -> dict[str, Any]:
    """The always-valid p-value and confidence sequence (what the rollout gate reads)."""
    t, k = c.target, c.control
    tau = gate.planned_tau(target=t.contacts, control=k.contacts, base_rate=base_rate)
    look = None
    if c.not_enough_data is None:
        look = sequential.look(t.responders, t.contacts, k.responders, k.contacts, tau=tau)
    rejects = look is not None and look.rejects(rules.ALPHA)
    if look is None:
        state = NOT_ENOUGH_DATA
    else:
        state = "effect shown" if rejects else "no effect shown yet"
    return {
        "p_value": look.p_value if look else None,
        "cs": _pair(look.cs) if look else None,
        "tau": tau,
        "rejects": rejects,
        "verdict": state,
    }


def power_plan(
    *,
    members: int | None,
    control_share_bp: int,
    test_share_bp: int,
    base_rate: float | None = None,
) -> dict[str, Any] | None:
    """Before the start: the MDE of the test wave and of the whole list, and a small-control flag.

    ``members`` is the target list's size (or the segment's count before there is a list).
    """
    if not members or members <= 0:
        return None
    rate = base_rate if base_rate is not None else power.DEFAULT_BASE_RATE
    rows = []
    for wave, share_bp in (("test", test_share_bp), ("all", 10_000)):
        if share_bp <= 0:
            continue
        size = round(members * share_bp / 10_000)
        control = round(size * control_share_bp / 10_000)
        split = power.plan(base_rate=rate, target=size - control, control=control)
        rows.append(
            {
                "wave": wave,
                "target": size - control,
                "control": control,
                "mde": split.mde,
                "control_too_small": split.control_too_small,
            }
        )
    return {
        "base_rate": rate,
        "base_rate_source": "default" if base_rate is None else "history",
        "alpha": rules.ALPHA,
        "power": power.POWER,
        "rows": rows,
        "control_too_small": any(r["control_too_small"] for r in rows),
    }
