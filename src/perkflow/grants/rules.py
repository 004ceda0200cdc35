"""Pure rules of grants: the state machine, limit periods, retry backoff, partner signatures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from perkflow.kit import crypto


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


def can_pause(status: GrantStatus) -> bool:
    """Whether binding pauses a grant in this status when its subscriber is suspended."""
    return status in (GrantStatus.PENDING, GrantStatus.FULFILLED)


def resume_to(paused_from: str | None) -> GrantStatus:
    """Where a paused grant goes back to; an unknown origin resumes as fulfilled, never pending."""
    if paused_from == GrantStatus.PENDING.value:
        return GrantStatus.PENDING
    return GrantStatus.FULFILLED


# --- talking to partners -------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Perkflow-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Partner callbacks are signed like webhook pushes: one scheme, in the kit.
sign = crypto.sign_body
signature_problem = crypto.signature_problem


class OutcomeKind(StrEnum):
    FULFILLED = "fulfilled"  # the partner says it is done (fulfil) or cancelled (revoke)
    ACCEPTED = "accepted"  # the partner took it; a signed callback will confirm
    RETRY = "retry"  # timeout, connection error, 5xx, 408, 429: try again later
    REJECTED = "rejected"  # a 4xx or an explicit refusal: retrying cannot help
    DEFERRED = "deferred"  # not tried (circuit open, grant paused): no attempt used


@dataclass(frozen=True)
class Delivery:
    """One HTTP request to a partner, built from an outbox message inside a transaction."""

    message_id: int
    grant_id: int
    partner_id: int
    kind: str
    url: str
    body: bytes
    headers: dict[str, str]
    timeout_s: float


@dataclass(frozen=True)
class Outcome:
    """What came of one delivery."""

    kind: OutcomeKind
    order_id: str | None = None
    error: str | None = None


def classify_reply(status_code: int, payload: Any, *, kind: str = "fulfil") -> Outcome:
    """Turn a partner's HTTP reply to a fulfil or revoke request into an outcome."""
    data = payload if isinstance(payload, dict) else {}
    order = data.get("order_id")
    order_id = str(order)[:128] if order is not None else None
    if status_code in (408, 429) or status_code >= 500:
        return Outcome(OutcomeKind.RETRY, error=f"partner answered HTTP {status_code}")
    if status_code >= 400:
        reason = str(data.get("reason") or data.get("error") or "")[:200]
        return Outcome(OutcomeKind.REJECTED, error=f"partner refused: HTTP {status_code} {reason}")
    state = str(data.get("status", "")).lower()
    done = ("revoked", "cancelled") if kind == "revoke" else ("fulfilled", "done")
    if state in done:
        return Outcome(OutcomeKind.FULFILLED, order_id=order_id)
    if state in ("accepted", "processing"):
        return Outcome(OutcomeKind.ACCEPTED, order_id=order_id)
    if state in ("failed", "rejected"):
        reason = str(data.get("reason", ""))[:200]
        return Outcome(OutcomeKind.REJECTED, order_id=order_id, error=f"partner failed: {reason}")
    return Outcome(OutcomeKind.RETRY, error=f"partner reply not understood (status {state!r})")
