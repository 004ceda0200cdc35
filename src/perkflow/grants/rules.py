"""Pure rules of grants: the state machine, limit periods, retry backoff."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo


class GrantStatus(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED = "failed"
    PAUSED = "paused"


TRANSITIONS: dict[GrantStatus, frozenset[GrantStatus]] = {
    GrantStatus.PENDING: frozenset(
        {GrantStatus.FULFILLED, GrantStatus.FAILED, GrantStatus.REVOKED, GrantStatus.PAUSED}
    ),
    GrantStatus.FULFILLED: frozenset(
        {GrantStatus.USED, GrantStatus.EXPIRED, GrantStatus.REVOKED, GrantStatus.PAUSED}
    ),
    # A paused grant resumes to what it was (pending or fulfilled), or ends.
    GrantStatus.PAUSED: frozenset(
        {GrantStatus.FULFILLED, GrantStatus.PENDING, GrantStatus.REVOKED, GrantStatus.EXPIRED}
    ),
    # Re-drive from the dead-letter list puts a failed grant back in the queue.
    GrantStatus.FAILED: frozenset({GrantStatus.PENDING}),
    GrantStatus.USED: frozenset(),
    GrantStatus.EXPIRED: frozenset(),
    GrantStatus.REVOKED: frozenset(),
}

# Grants that still hold stock, a code or a partner order.
LIVE = frozenset({GrantStatus.PENDING, GrantStatus.FULFILLED, GrantStatus.PAUSED})


class OutboxKind(StrEnum):
    FULFIL = "fulfil"
    REVOKE = "revoke"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


def can_move(current: GrantStatus, target: GrantStatus) -> bool:
    """Whether the state machine allows this step."""
    return target in TRANSITIONS[current]


def month_period(at: datetime, zone: str) -> str:
    """The operator-local month a grant counts against, e.g. `2026-11`."""
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m")


TOTAL_PERIOD = "total"


def backoff_s(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential, capped."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))
