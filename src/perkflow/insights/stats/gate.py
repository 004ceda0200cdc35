"""The rollout gate: when a test wave's evidence is enough to send to everyone else.

Two conditions, both stated in the refusal when they fail:

1. **the response window has closed** — the test wave finished at least the goal's
   ``window_days`` ago, so late responders are counted and the cells are complete;
2. **the sequential test rejects "no effect"** — the always-valid mSPRT p-value of the test
   wave's targets against its controls is below alpha (equivalently its confidence sequence
   excludes 0). This stays valid however often the evaluation was read before (``sequential``).
   The mixing sd τ is the planned MDE of the wave's sizes at the planned base rate.

The comparison is intent to treat over the whole wave: targets and controls were split at
random from the same list, so it is fair whatever variants the targets were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from perkflow.insights.stats import power, sequential, tests


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether the rollout may start, and the evidence read."""

    allowed: bool
    reason: str
    p_value: float | None
    cs: tuple[float, float] | None
    tau: float


def planned_tau(*, target: int, control: int, base_rate: float | None = None) -> float:
    """τ for the mixture: the MDE the wave's sizes were planned to detect."""
    rate = base_rate if base_rate is not None else power.DEFAULT_BASE_RATE
    return sequential.tau_for(power.mde(base_rate=rate, target=target, control=control))


def decide(
    *,
    x_t: int,
    n_t: int,
    x_c: int,
    n_c: int,
    finished_at: datetime | None,
    window_days: int,
    now: datetime,
    alpha: float = 0.05,
    base_rate: float | None = None,
) -> Decision:
    """The gate's decision on a finished test wave's counts."""
    tau = planned_tau(target=n_t, control=n_c, base_rate=base_rate)
    if finished_at is None:
        return Decision(False, "the test wave has not finished", None, None, tau)
    closes = finished_at + timedelta(days=window_days)
    if now < closes:
        return Decision(
            False,
            f"the response window is open until {closes.isoformat(timespec='minutes')}; "
            "roll out after it closes",
            None,
            None,
            tau,
        )
    reason = tests.not_enough_data(x_t, n_t, x_c, n_c)
    if reason is not None:
        return Decision(False, f"not enough data in the test wave ({reason})", None, None, tau)
    look = sequential.look(x_t, n_t, x_c, n_c, tau=tau, alpha=alpha)
    if look is None or not look.rejects(alpha):
        p = look.p_value if look else None
        shown = f"{p:.3g}" if p is not None else "none"
        return Decision(
            False,
            f"the sequential test does not show an effect (always-valid p = {shown}, "
            f"needs < {alpha:g})",
            p,
            look.cs if look else None,
            tau,
        )
    return Decision(True, "the sequential test shows an effect", look.p_value, look.cs, tau)
