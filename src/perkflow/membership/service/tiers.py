"""Membership use cases: tier changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.errors import Conflict, ValidationFailed
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.membership import repository as repo
from perkflow.membership import rules
from perkflow.membership.models import (
    PrepaidEvent,
)
from perkflow.membership.rules import (
    Cadence,
    ChangeKind,
)
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _in_scope, _require_write
from .points import forfeit_points
from .program import Loaded, _facts, _values, load

# --- tier changes --------------------------------------------------------------------------------


@dataclass
class TierRun:
    """What one application of evaluated tiers changed."""

    evaluated: int = 0
    joined: int = 0
    upgraded: int = 0
    downgraded: int = 0
    left: int = 0
    scheduled: int = 0
    cancelled: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)

    def count(self, kind: ChangeKind) -> None:
        attr = {
            ChangeKind.JOIN: "joined",
            ChangeKind.UPGRADE: "upgraded",
            ChangeKind.DOWNGRADE: "downgraded",
            ChangeKind.LEAVE: "left",
            ChangeKind.DOWNGRADE_SCHEDULED: "scheduled",
            ChangeKind.DOWNGRADE_CANCELLED: "cancelled",
        }[kind]
        setattr(self, attr, getattr(self, attr) + 1)

    def add(self, other: TierRun) -> None:
        for name in ("evaluated", "joined", "upgraded", "downgraded", "left", "scheduled"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cancelled += other.cancelled


def apply_tier_targets(
    session: Session,
    *,
    actor: Actor,
    targets: Mapping[int, int],
    reason: str,
    source: str,
    immediate: Iterable[int] = (),
    loaded: Loaded | None = None,
) -> TierRun:
    """Move members to freshly evaluated levels: up at once, down after the grace period."""
    loaded = loaded or load(session)
    now = clock.now()
    run = TierRun(evaluated=len(targets))
    at_once = set(immediate)
    repo.begin_write(session)
    repo.ensure_members(
        session, subscriber_ids=sorted(s for s, lvl in targets.items() if lvl > 0), at=now
    )
    for m in repo.lock_members(session, sorted(targets)):
        target = targets[m.subscriber_id]
        current = loaded.level_of(m.tier_id)
        if current < 0:  # a retired tier: the member moves at once, wherever the rules say
            current, at_once_here = (0 if target > 0 else 1), True
        else:
            at_once_here = m.subscriber_id in at_once
        pending_level = (
            loaded.level_of(m.pending_tier_id) if m.downgrade_due_at is not None else None
        )
        decision = rules.decide(
            current=current,
            pending=pending_level,
            due=m.downgrade_due_at,
            target=target,
            now=now,
            grace_days=loaded.grace_days,
            immediate=at_once_here,
        )
        if decision.kind is None:
            continue
        new_tier = loaded.by_level(decision.level) if decision.level > 0 else None
        pending_tier = (
            loaded.by_level(decision.pending) if decision.pending and decision.pending > 0 else None
        )
        new_tier_id = new_tier.id if new_tier else None
        moved = new_tier_id != m.tier_id
        repo.set_member(
            session,
            subscriber_id=m.subscriber_id,
            tier_id=new_tier_id,
            pending_tier_id=pending_tier.id if pending_tier else None,
            due=decision.due,
            at=now,
            since=now if moved else None,
        )
        run.count(decision.kind)
        to_tier = (
            (pending_tier.id if pending_tier else None)
            if decision.kind == ChangeKind.DOWNGRADE_SCHEDULED
            else new_tier_id
        )
        run.changes.append(
            {
                "subscriber_id": m.subscriber_id,
                "from_tier_id": m.tier_id,
                "to_tier_id": to_tier,
                "kind": decision.kind.value,
                "reason": (
                    f"{reason}; downgrade due {decision.due.date().isoformat()}"
                    if decision.kind == ChangeKind.DOWNGRADE_SCHEDULED and decision.due
                    else reason
                )[:255],
                "source": source[:16],
                "at": now,
            }
        )
    repo.add_changes(session, run.changes)
    if run.changes:
        org.record_audit(
            session,
            actor=actor,
            action="member.tiers",
            target_type="subscriber" if len(targets) == 1 else "members",
            target_id=str(next(iter(targets))) if len(targets) == 1 else f"{len(targets)}",
            details={
                "source": source,
                "reason": reason[:255],
                "joined": run.joined,
                "upgraded": run.upgraded,
                "downgraded": run.downgraded,
                "left": run.left,
                "scheduled": run.scheduled,
                "cancelled": run.cancelled,
            },
        )
    return run


def apply_due_downgrades(session: Session, *, actor: Actor, limit: int = 1000) -> int:
    """Downgrades whose grace period has ended take effect; returns how many did."""
    now = clock.now()
    ids = repo.due_downgrades(session, now=now, limit=limit)
    if not ids:
        return 0
    loaded = load(session)
    repo.begin_write(session)
    changes = []
    for m in repo.lock_members(session, ids):
        if m.downgrade_due_at is None or clock.as_utc(m.downgrade_due_at) > now:
            continue  # re-qualified meanwhile (the lock shows the latest state)
        target_level = loaded.level_of(m.pending_tier_id) if m.pending_tier_id else 0
        repo.set_member(
            session,
            subscriber_id=m.subscriber_id,
            tier_id=m.pending_tier_id,
            pending_tier_id=None,
            due=None,
            at=now,
            since=now,
        )
        changes.append(
            {
                "subscriber_id": m.subscriber_id,
                "from_tier_id": m.tier_id,
                "to_tier_id": m.pending_tier_id,
                "kind": rules.due_kind(max(target_level, 0)).value,
                "reason": "grace period ended",
                "source": "grace",
                "at": now,
            }
        )
    repo.add_changes(session, changes)
    if changes:
        org.record_audit(
            session,
            actor=actor,
            action="member.downgrades",
            target_type="members",
            target_id=str(len(changes)),
            details={"applied": len(changes)},
        )
    return len(changes)


def evaluate_member(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    reason: str,
    source: str,
    zone: str,
    mart: Mart | None = None,
) -> TierRun:
    """Re-derive one subscriber's tier after an event (plan change, prepayment, status change)."""
    loaded = load(session)
    facts = _facts(session, subscriber_id)
    extra = loaded.fields() - set(rules.BUILTIN_FIELDS)
    values = _values(session, facts, zone=zone, mart=mart, extra=extra)
    churned = facts.status == Status.CHURNED
    target = rules.level_for(loaded.specs, values, churned=churned)
    return apply_tier_targets(
        session,
        actor=actor,
        targets={subscriber_id: target},
        reason=reason,
        source=source,
        immediate=[subscriber_id] if churned else [],
        loaded=loaded,
    )


def record_prepayment(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    amount_fen: int,
    idempotency_key: str,
    zone: str,
    reason: str = "prepayment",
    mart: Mart | None = None,
) -> tuple[int, bool]:
    """Add a prepayment (or, negative, its use) and re-evaluate; (balance, replayed)."""
    _require_write(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise ValidationFailed(
            "idempotency key must be 1 to 128 characters", field="idempotency_key"
        )
    if amount_fen == 0 or abs(amount_fen) > 100_000_000:
        raise ValidationFailed(
            "amount must be non-zero and at most 1,000,000 yuan", field="amount_fen"
        )
    _facts(session, subscriber_id)
    seen = repo.prepaid_event_by_key(session, key)
    if seen is not None:
        if seen.subscriber_id != subscriber_id or seen.amount_fen != amount_fen:
            raise Conflict(
                "this idempotency key was used for another prepayment", field="idempotency_key"
            )
        return repo.prepaid_balance(session, subscriber_id), True
    now = clock.now()
    repo.begin_write(session)
    try:
        with session.begin_nested():
            repo.ensure_prepaid_account(session, subscriber_id=subscriber_id, at=now)
            if not repo.move_prepaid(
                session, subscriber_id=subscriber_id, amount_fen=amount_fen, at=now
            ):
                raise Conflict("the prepaid balance is too low", field="amount_fen")
            session.add(
                PrepaidEvent(
                    subscriber_id=subscriber_id,
                    amount_fen=amount_fen,
                    idempotency_key=key,
                    reason=reason.strip()[:255] or "prepayment",
                    at=now,
                )
            )
            session.flush()  # the unique key decides a concurrent duplicate, here
    except IntegrityError:
        return repo.prepaid_balance(session, subscriber_id), True
    org.record_audit(
        session,
        actor=actor,
        action="member.prepay",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"amount_fen": amount_fen, "key": key},
    )
    evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"prepaid {amount_fen / 100:.2f} yuan",
        source="prepay",
        zone=zone,
        mart=mart,
    )
    return repo.prepaid_balance(session, subscriber_id), False


def change_plan(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    plan_fee_fen: int,
    zone: str,
    reason: str = "plan change",
    mart: Mart | None = None,
) -> TierRun:
    """Move a subscriber to another plan and re-evaluate their tier."""
    _require_write(actor)
    before = subscribers.change_plan_fee(
        session,
        actor=SYSTEM if actor.kind == "api_key" else actor,
        subscriber_id=subscriber_id,
        plan_fee_fen=plan_fee_fen,
        reason=reason,
    )
    return evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"plan {before / 100:.0f} → {plan_fee_fen / 100:.0f} yuan",
        source="plan",
        zone=zone,
        mart=mart,
    )


@dataclass(frozen=True)
class StatusOutcome:
    """A status change with its binding and what it meant for membership."""

    binding: grants.Binding
    run: TierRun
    forfeited_picks: int
    forfeited_points: int
    event: Any = None
    coupon_binding: Any = None


def change_status(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    status: Status,
    reason: str,
    zone: str,
    source: str = "membership",
    mart: Mart | None = None,
) -> StatusOutcome:
    """Change a subscriber's status: grants and coupons bind to it, then the tier (churn leaves)."""
    # The one status change path of every entry point (API, console, CLI): membership is the
    # capability above grants and coupons, so it is where all three meet in one transaction.
    changed = grants.change_subscriber_status(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        status=status,
        reason=reason,
        source=source[:16],
    )
    picks = points = 0
    run = evaluate_member(
        session,
        actor=actor,
        subscriber_id=subscriber_id,
        reason=f"subscriber {status.value}: {reason.strip()}",
        source="status",
        zone=zone,
        mart=mart,
    )
    if status == Status.CHURNED:
        now = clock.now()
        cycles = [rules.cycle_of(now, zone, c) for c in Cadence]
        picks = repo.forfeit_picks(session, subscriber_id=subscriber_id, cycles=cycles)
        points = forfeit_points(session, actor=actor, subscriber_id=subscriber_id, reason="churned")
    return StatusOutcome(
        binding=changed.binding,
        run=run,
        forfeited_picks=picks,
        forfeited_points=points,
        event=changed.event,
        coupon_binding=changed.coupon_binding,
    )
