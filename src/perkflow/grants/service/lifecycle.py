"""Grants use cases: failing, revoking, pausing, resuming and expiring grants."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.coupons import service as coupons
from perkflow.errors import Conflict
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant
from perkflow.grants.rules import (
    GrantStatus,
    OutboxKind,
    OutboxStatus,
    can_pause,
    resume_to,
)
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

from .steps import _event, _has_connector, _release, _uncount

# --- failing, revoking, pausing -------------------------------------------------------------------


def _fail(session: Session, *, grant: Grant, reason: str) -> bool:
    """pending → failed: give back the limit counters, then the stock (lock order as issuing)."""
    if not repo.move(
        session,
        grant_id=grant.id,
        expected=GrantStatus.PENDING.value,
        target=GrantStatus.FAILED.value,
        at=clock.now(),
        failure_reason=reason[:255],
    ):
        return False
    _uncount(session, grant)
    _release(session, [grant])
    _event(session, grant_id=grant.id, from_status="pending", to_status="failed", reason=reason)
    org.record_audit(
        session,
        actor=SYSTEM,
        action="grant.fail",
        target_type="grant",
        target_id=str(grant.id),
        details={"reason": reason[:255]},
    )
    return True


def _ensure_revoke_message(session: Session, *, grant: Grant) -> bool:
    """Queue one revoke request to a partner that supports it; at most one per grant."""
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    if not (partner.supports_revoke and _has_connector(partner)):
        return False
    if any(
        m.status == OutboxStatus.PENDING.value
        for m in repo.messages_of(session, grant.id, OutboxKind.REVOKE)
    ):
        return False
    repo.add_message(
        session,
        grant_id=grant.id,
        kind=OutboxKind.REVOKE,
        at=clock.now(),
        payload={"order_id": grant.partner_order_id},
    )
    return True


def _cancel_fulfil_messages(session: Session, *, grant: Grant, why: str) -> bool:
    """Stop pending fulfil requests; True if one may already have reached the partner."""
    reached = False
    for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
        if message.attempts > 0:
            reached = True
        if message.status == OutboxStatus.PENDING.value:
            repo.settle_message(
                session,
                message_id=message.id,
                at=clock.now(),
                status=OutboxStatus.DONE,
                error=f"cancelled: {why}",
            )
    return reached


def _revoke(session: Session, *, grant: Grant, reason: str) -> bool:
    """A live grant → revoked; what a pending one reserved comes back; the partner is told."""
    before = grant.status
    if not repo.move(
        session,
        grant_id=grant.id,
        expected=before,
        target=GrantStatus.REVOKED.value,
        at=clock.now(),
        paused_from=None,
    ):
        return False
    was_pending = before == "pending" or (before == "paused" and grant.paused_from == "pending")
    if was_pending:
        reached = _cancel_fulfil_messages(session, grant=grant, why="grant revoked")
        _release(session, [grant])
        if reached:
            _ensure_revoke_message(session, grant=grant)
    else:
        _ensure_revoke_message(session, grant=grant)
    _event(session, grant_id=grant.id, from_status=before, to_status="revoked", reason=reason)
    return True


@dataclass
class Binding:
    """What binding did to one subscriber's grants."""

    revoked: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.revoked) + len(self.paused) + len(self.resumed)


def apply_binding(
    session: Session, *, actor: Actor, subscriber_id: int, status: Status, reason: str
) -> Binding:
    """Make a subscriber's revocable grants follow their network status (绑)."""
    # Every live grant is locked first, in id order, before any stock row: no lock cycle with
    # a worker that holds one grant and then returns its stock.
    grants = repo.lock_live_of_subscriber(session, subscriber_id)
    result = Binding()
    now = clock.now()
    for grant in grants:
        if not catalog.get_benefit(session, benefit_id=grant.benefit_id).revocable:
            continue  # a benefit sold as not revocable stays with the subscriber
        current = GrantStatus(grant.status)
        if status == Status.CHURNED:
            if _revoke(session, grant=grant, reason=reason):
                result.revoked.append(grant.id)
        elif status == Status.SUSPENDED and can_pause(current):
            if repo.move(
                session,
                grant_id=grant.id,
                expected=current.value,
                target=GrantStatus.PAUSED.value,
                at=now,
                paused_from=current.value,
            ):
                _event(
                    session,
                    grant_id=grant.id,
                    from_status=current.value,
                    to_status="paused",
                    reason=reason,
                )
                result.paused.append(grant.id)
        elif status == Status.ACTIVE and current == GrantStatus.PAUSED:
            target = resume_to(grant.paused_from)
            if repo.move(
                session,
                grant_id=grant.id,
                expected=current.value,
                target=target.value,
                at=now,
                paused_from=None,
            ):
                _event(
                    session,
                    grant_id=grant.id,
                    from_status="paused",
                    to_status=target.value,
                    reason=reason,
                )
                result.resumed.append(grant.id)
                if target == GrantStatus.PENDING:
                    _wake_fulfil(session, grant_id=grant.id, at=now)
    if result.changed:
        org.record_audit(
            session,
            actor=actor,
            action="grant.binding",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={
                "status": status.value,
                "revoked": result.revoked,
                "paused": result.paused,
                "resumed": result.resumed,
            },
        )
    return result


def _wake_fulfil(session: Session, *, grant_id: int, at: datetime) -> None:
    """A resumed pending grant's request goes out at once instead of after its deferral."""
    for message in repo.messages_of(session, grant_id, OutboxKind.FULFIL):
        if message.status == OutboxStatus.PENDING.value and message.next_attempt_at > at:
            message.next_attempt_at = at


@dataclass(frozen=True)
class StatusChanged:
    """A subscriber's status change and the binding it caused."""

    event: Any
    binding: Binding
    coupon_binding: coupons.CouponBinding | None = None


def change_subscriber_status(
    session: Session, *, actor: Actor, subscriber_id: int, status: Status, reason: str, source: str
) -> StatusChanged:
    """Change a subscriber's status and bind their grants and coupons to it in one transaction."""
    # Entry points call membership.service.change_status, which calls this and then ends or
    # re-derives the tier: membership sits above grants, so the whole path is assembled there.
    event = subscribers.change_status(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        status=status,
        reason=reason,
        source=source,
    )
    why = f"subscriber {status.value}: {reason.strip()}"[:255]
    binding = apply_binding(
        session, actor=actor, subscriber_id=subscriber_id, status=status, reason=why
    )
    # Coupons follow too: a churned subscriber's unredeemed coupon is void at every counter.
    bound = coupons.bind_coupons(
        session, actor=actor, subscriber_id=subscriber_id, status=status, reason=why
    )
    return StatusChanged(event=event, binding=binding, coupon_binding=bound)


@dataclass(frozen=True)
class VerifyRow:
    """One subscriber binding verification changed or could not change."""

    subscriber_id: int
    ledger_status: str
    mart_status: str
    action: str
    revoked: int = 0
    paused: int = 0
    resumed: int = 0
    note: str = ""


def _chunks(pairs: Iterable[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _needs_binding(status: Status, live: set[str]) -> bool:
    if status == Status.CHURNED:
        return bool(live)
    if status == Status.SUSPENDED:
        return bool(live & {"pending", "fulfilled"})
    return "paused" in live


class ChangesStatus(Protocol):
    """The status change path the caller owns (membership's: grants, coupons and the tier)."""

    def __call__(
        self,
        session: Session,
        *,
        actor: Actor,
        subscriber_id: int,
        status: Status,
        reason: str,
        source: str,
    ) -> Any: ...


def verify_binding(
    session: Session,
    *,
    actor: Actor,
    snapshot: Iterable[tuple[int, str]],
    change_status: ChangesStatus,
) -> list[VerifyRow]:
    """Bring ledger statuses in line with a mart snapshot, then bind every live grant to them.

    A status that differs goes through `change_status` — the one path every entry point uses
    (membership.service.change_status), so a churn found here also ends the membership tier.
    """
    report: list[VerifyRow] = []
    for chunk in _chunks(snapshot, 1000):
        ledger = subscribers.subscriber_statuses(session, subscriber_ids=[sid for sid, _ in chunk])
        for sid, raw in chunk:
            current = ledger.get(sid)
            if current is None or current.value == raw:
                continue
            try:
                target = Status(raw)
            except ValueError:
                report.append(VerifyRow(sid, current.value, raw, "skipped", note="unknown status"))
                continue
            repo.begin_write(session)
            try:
                with session.begin_nested():
                    changed = change_status(
                        session,
                        actor=actor,
                        subscriber_id=sid,
                        status=target,
                        reason="reconciled with the mart snapshot",
                        source="binding",
                    )
            except Conflict as exc:
                report.append(VerifyRow(sid, current.value, raw, "skipped", note=exc.message))
                continue
            b = changed.binding
            report.append(
                VerifyRow(
                    sid,
                    current.value,
                    raw,
                    "status changed",
                    len(b.revoked),
                    len(b.paused),
                    len(b.resumed),
                )
            )
    # Grants that escaped binding (statuses loaded in bulk, an interrupted change) are bound now.
    after = 0
    for _ in range(100_000):  # bounded: each round moves `after` forward
        ids = repo.live_subscriber_ids(session, after=after, limit=1000)
        if not ids:
            break
        after = ids[-1]
        live = repo.live_statuses(session, ids)
        for sid, status in sorted(
            subscribers.subscriber_statuses(session, subscriber_ids=ids).items()
        ):
            if not _needs_binding(status, live.get(sid, set())):
                continue
            b = apply_binding(
                session,
                actor=actor,
                subscriber_id=sid,
                status=status,
                reason=f"binding verified: subscriber is {status.value}",
            )
            if b.changed:
                report.append(
                    VerifyRow(
                        sid,
                        status.value,
                        status.value,
                        "grants bound",
                        len(b.revoked),
                        len(b.paused),
                        len(b.resumed),
                    )
                )
    org.record_audit(
        session,
        actor=actor,
        action="binding.verify",
        target_type="subscriber",
        target_id="*",
        details={"changed": len([r for r in report if r.action != "skipped"]), "rows": len(report)},
    )
    return report


# --- expiry ---------------------------------------------------------------------------------------


def expire_grants(session: Session, *, now: datetime, batch: int = 500) -> int:
    """Fulfilled and paused grants past their validity become expired; returns how many."""
    expired = 0
    for status in (GrantStatus.FULFILLED, GrantStatus.PAUSED):
        for _ in range(1_000_000 // batch):  # bounded; each round moves its rows out of `status`
            ids = repo.expirable_ids(session, now=now, status=status.value, limit=batch)
            if not ids:
                break
            for grant_id in ids:
                grant = repo.lock(session, grant_id)
                if grant is None or grant.status != status.value:
                    continue
                was_pending = grant.paused_from == "pending"
                if not repo.move(
                    session,
                    grant_id=grant_id,
                    expected=status.value,
                    target=GrantStatus.EXPIRED.value,
                    at=now,
                    paused_from=None,
                ):
                    continue
                if was_pending:
                    _cancel_fulfil_messages(session, grant=grant, why="grant expired")
                    _release(session, [grant])
                _event(
                    session,
                    grant_id=grant_id,
                    from_status=status.value,
                    to_status="expired",
                    reason="validity ended",
                )
                expired += 1
    if expired:
        org.record_audit(
            session,
            actor=SYSTEM,
            action="grant.expire",
            target_type="grant",
            target_id="*",
            details={"count": expired, "at": now.isoformat()},
        )
    return expired
