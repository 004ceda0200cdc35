"""Incremental revenue per target contact, with an interval checked on zero-inflated spend.

Most contacts spend nothing (98.7 % in Hillstrom) and the few who do spend a heavy-tailed amount.
The interval is the **unequal-variance normal (Welch) interval** of the difference of mean spend
per contact, zeros included::

    d = S_t/n_t − S_c/n_c,   d ± z · sqrt(s_t²/n_t + s_c²/n_c)

with ``S`` the cell's total and ``s²`` the variance per contact (from the total of squares). It
needs only each cell's count, total, total of squares and number of spenders.

Why not a bootstrap: on zero-inflated lognormal spend the simulation
(``python -m perkflow.insights.stats.simulate``) shows the studentized bootstrap covering *less*
than this interval (84–93 % on the same experiments): a resample cannot show a tail the sample
did not contain. Every interval fails with few spenders, so the rule is: fewer than
``MIN_SPENDERS`` contacts who spent in either cell is **sample too small** — no interval, and the
report says so. With that rule the interval covers 92.6–97.9 % for lognormal spend of shape
σ ≤ 2 (mean up to about 7× the median) and a target spend rate up to twice the control's; for
heavier tails (σ = 2.5) it falls to 87–98 %, which the documentation states.
Assumptions: random assignment, independent subscribers, spend at least finite in variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from perkflow.insights.stats.intervals import Z95

MIN_SPENDERS = 100


class TooSmall(StrEnum):
    """Why there is no revenue interval."""

    EMPTY_CELL = "empty_cell"
    FEW_SPENDERS = "few_spenders"
    NO_SPEND_DETAIL = "no_spend_detail"


@dataclass(frozen=True, slots=True)
class Spend:
    """A cell's spend: contacts, how many spent, the total and the total of squares (fen)."""

    contacts: int
    spenders: int
    total_fen: float
    total_sq_fen2: float


@dataclass(frozen=True, slots=True)
class RevenueUplift:
    """Incremental revenue per target contact (fen) with its interval."""

    per_target_fen: float
    ci95: tuple[float, float]


def _mean_var(cell: Spend) -> tuple[float, float]:
    n = cell.contacts
    mean = cell.total_fen / n
    return mean, max(cell.total_sq_fen2 - n * mean * mean, 0.0) / (n - 1)


def uplift(target: Spend, control: Spend, *, z: float = Z95) -> RevenueUplift | TooSmall:
    """Mean spend per target minus per control contact with its interval, or why there is none."""
    if target.contacts < 2 or control.contacts < 2:
        return TooSmall.EMPTY_CELL
    if min(target.spenders, control.spenders) < MIN_SPENDERS:
        return TooSmall.FEW_SPENDERS
    mt, vt = _mean_var(target)
    mc, vc = _mean_var(control)
    d = mt - mc
    half = z * math.sqrt(vt / target.contacts + vc / control.contacts)
    return RevenueUplift(per_target_fen=d, ci95=(d - half, d + half))


def spend_of(contacts: int, amounts: list[int] | list[float]) -> Spend:
    """The spend summary of a cell from the amounts of its contacts who spent."""
    nonzero = [float(a) for a in amounts if a]
    return Spend(contacts, len(nonzero), sum(nonzero), sum(a * a for a in nonzero))
