"""Membership use cases: points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.lazy import lazy_module
from perkflow.membership import repository as repo
from perkflow.membership import rules
from perkflow.membership.models import (
    PointsEntry,
    PointsLot,
)
from perkflow.membership.rules import (
    COUNTER_ACCOUNT,
    MEMBER_ACCOUNT,
    EntryKind,
)
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers.rules import Status

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")
    pq = lazy_module("pyarrow.parquet")

from .access import _in_scope, _require_adjust, _require_write
from .program import Loaded, _facts, load

# --- points --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    """A points entry and whether this call wrote it or found it under its key."""

    entry: PointsEntry | None
    replayed: bool
    balance: int


def _replayed(session: Session, entry: PointsEntry, subscriber_id: int) -> Posted:
    if entry.subscriber_id != subscriber_id:
        raise Conflict("this key was used for another subscriber's points", field="idempotency_key")
    return Posted(entry=entry, replayed=True, balance=repo.points_balance(session, subscriber_id))


def _expire_due(session: Session, *, subscriber_id: int, now: datetime) -> int:
    """Expire this subscriber's due lots; the caller holds the account lock."""
    total = 0
    for lot in repo.expired_lots(session, subscriber_id=subscriber_id, now=now):
        left = lot.remaining
        if not repo.take_from_lot(session, lot_id=lot.id, expected=left, take=left):
            continue
        if not repo.move_points(session, subscriber_id=subscriber_id, points=-left, at=now):
            raise RuntimeError(f"points account {subscriber_id} is below its lots")
        repo.add_entry(
            session,
            PointsEntry(
                subscriber_id=subscriber_id,
                kind=EntryKind.EXPIRE.value,
                points=-left,
                idempotency_key=f"expire:lot:{lot.id}",
                reason=f"expired {clock.as_utc(lot.expires_at).date().isoformat()}",
                ref=f"lot:{lot.id}",
                details={"lot_id": lot.id},
                at=now,
            ),
            counter=COUNTER_ACCOUNT[EntryKind.EXPIRE],
            member=MEMBER_ACCOUNT,
        )
        total += left
    return total


def _take(session: Session, *, subscriber_id: int, lots: Sequence[PointsLot], amount: int) -> None:
    for lot_id, take in rules.take_fifo([(lot.id, lot.remaining) for lot in lots], amount):
        lot = next(lo for lo in lots if lo.id == lot_id)
        if not repo.take_from_lot(session, lot_id=lot_id, expected=lot.remaining, take=take):
            raise RuntimeError(f"lot {lot_id} changed under the account lock")


def _post(
    session: Session,
    *,
    subscriber_id: int,
    kind: EntryKind,
    points: int,
    key: str,
    reason: str,
    ref: str | None = None,
    details: dict[str, Any] | None = None,
    zone: str,
    expiry_years: int | None = None,
    earned_at: datetime | None = None,
) -> Posted:
    """Write one entry with its two postings, the balance and the lots, atomically and once."""
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    now = clock.now()
    repo.begin_write(session)
    with session.begin_nested():
        repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
        # The account row is the one lock every points write takes first: burns, expiry and
        # reversals of one member queue here, so lots are only ever changed under it (the lock
        # outlives this savepoint: it is the transaction's).
        repo.lock_points_balance(session, subscriber_id)
        # Lots past their date leave the balance whatever happens to this write: a burn refused
        # for want of points must not bring back points that expired before it.
        _expire_due(session, subscriber_id=subscriber_id, now=now)
    try:
        with session.begin_nested():
            if points < 0:
                if not repo.move_points(
                    session, subscriber_id=subscriber_id, points=points, at=now
                ):
                    raise Conflict("not enough points", field="points")
                _take(
                    session,
                    subscriber_id=subscriber_id,
                    lots=repo.open_lots(session, subscriber_id, now=now),
                    amount=-points,
                )
            elif points > 0:
                repo.move_points(session, subscriber_id=subscriber_id, points=points, at=now)
            entry = repo.add_entry(
                session,
                PointsEntry(
                    subscriber_id=subscriber_id,
                    kind=kind.value,
                    points=points,
                    idempotency_key=key,
                    reason=reason[:255],
                    ref=ref,
                    details=details or {},
                    at=now,
                ),
                counter=COUNTER_ACCOUNT[kind],
                member=MEMBER_ACCOUNT,
            )
            if points > 0:
                when = earned_at or now
                repo.add_lot(
                    session,
                    PointsLot(
                        subscriber_id=subscriber_id,
                        entry_id=entry.id,
                        points=points,
                        remaining=points,
                        earned_at=when,
                        expires_at=rules.expires_at(when, zone=zone, years=expiry_years or 0),
                    ),
                )
            session.flush()
    except IntegrityError:
        winner = repo.entry_by_key(session, key)
        if winner is None:
            raise
        return _replayed(session, winner, subscriber_id)
    return Posted(entry=entry, replayed=False, balance=repo.points_balance(session, subscriber_id))


def _multiplier(session: Session, loaded: Loaded, subscriber_id: int) -> int:
    member = repo.member(session, subscriber_id)
    if member is None or member.tier_id is None:
        return 100
    tier = loaded.all_tiers.get(member.tier_id)
    return tier.points_multiplier_pct if tier is not None and tier.status == "active" else 100


def _earnable(session: Session, subscriber_id: int) -> None:
    status = _facts(session, subscriber_id).status
    if status == Status.CHURNED:
        raise Conflict("a churned subscriber earns no points", field="subscriber_id")


def earn_for_bill(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    bill_ref: str,
    bill_fen: int,
    zone: str,
    earned_at: datetime | None = None,
    loaded: Loaded | None = None,
) -> Posted:
    """Points for a paid bill (yuan × points per yuan × tier multiplier), once per bill."""
    _require_write(actor)
    ref = bill_ref.strip()
    if not ref or len(ref) > 100:
        raise ValidationFailed("bill reference must be 1 to 100 characters", field="bill_ref")
    if bill_fen < 0 or bill_fen > 100_000_000:
        raise ValidationFailed("bill must be from 0 to 1,000,000 yuan", field="bill_fen")
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    key = f"bill:{subscriber_id}:{ref}"
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    _earnable(session, subscriber_id)
    loaded = loaded or load(session)
    multiplier = _multiplier(session, loaded, subscriber_id)
    points = rules.points_for_bill(
        bill_fen, per_yuan=loaded.points.per_yuan, multiplier_pct=multiplier
    )
    if points <= 0:
        return Posted(
            entry=None, replayed=False, balance=repo.points_balance(session, subscriber_id)
        )
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.EARN,
        points=points,
        key=key,
        reason=f"bill {ref}: {bill_fen / 100:.2f} yuan × {multiplier / 100:g}",
        ref=f"bill:{ref}",
        details={"bill_fen": bill_fen, "multiplier_pct": multiplier},
        zone=zone,
        expiry_years=loaded.points.expiry_years,
        earned_at=earned_at,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.earn",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"bill_ref": ref, "points": points},
        )
    return posted


def award_bonus(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    points: int,
    campaign_ref: str,
    zone: str,
) -> Posted:
    """Campaign bonus points, once per campaign and subscriber."""
    _require_adjust(actor)
    ref = campaign_ref.strip()
    if not ref or len(ref) > 64:
        raise ValidationFailed(
            "campaign reference must be 1 to 64 characters", field="campaign_ref"
        )
    if not 0 < points <= 1_000_000:
        raise ValidationFailed("bonus must be from 1 to 1,000,000 points", field="points")
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    _earnable(session, subscriber_id)
    loaded = load(session)
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.BONUS,
        points=points,
        key=f"bonus:{ref}:{subscriber_id}",
        reason=f"campaign {ref}",
        ref=f"campaign:{ref}",
        zone=zone,
        expiry_years=loaded.points.expiry_years,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.bonus",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"campaign": ref, "points": points},
        )
    return posted


def burn_points(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    points: int,
    idempotency_key: str,
    reason: str,
    zone: str,
    ref: str | None = None,
) -> Posted:
    """Spend points (oldest lots first); 409 when the balance is short, and nothing changes."""
    if actor.kind != "subscriber":
        _require_adjust(actor)
        _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    elif actor.id != str(subscriber_id):
        raise Forbidden("a subscriber spends only their own points")
    if not 0 < points <= 100_000_000:
        raise ValidationFailed("points must be from 1 to 100,000,000", field="points")
    key = idempotency_key.strip()
    if not key or len(key) > 100:
        raise ValidationFailed(
            "idempotency key must be 1 to 100 characters", field="idempotency_key"
        )
    posted = _post(
        session,
        subscriber_id=subscriber_id,
        kind=EntryKind.BURN,
        points=-points,
        key=f"burn:{subscriber_id}:{key}",
        reason=reason,
        ref=ref,
        zone=zone,
    )
    if not posted.replayed:
        org.record_audit(
            session,
            actor=actor,
            action="points.burn",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"points": points, "key": key, "reason": reason[:255]},
        )
    return posted


@dataclass(frozen=True)
class Redeemed:
    posted: Posted
    grant_id: int
    cost: int


def redeem_points(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    benefit_id: int,
    idempotency_key: str,
    zone: str,
) -> Redeemed:
    """Exchange points for a catalog benefit at its sale price; both happen or neither does."""
    benefit = catalog.get_benefit(session, benefit_id=benefit_id)
    loaded = load(session)
    cost = rules.points_cost(
        benefit.sale_price_fen, value_fen_per_100=loaded.points.value_fen_per_100
    )
    key = idempotency_key.strip()
    repo.begin_write(session)
    with session.begin_nested():
        posted = burn_points(
            session,
            actor=actor,
            subscriber_id=subscriber_id,
            points=cost,
            idempotency_key=f"redeem:{key}",
            reason=f"redeemed for {benefit.code}",
            zone=zone,
            ref=f"benefit:{benefit.id}",
        )
        issued = grants.issue_grant(
            session,
            actor=SYSTEM,
            subscriber_id=subscriber_id,
            benefit_id=benefit.id,
            source="points",
            idempotency_key=f"points:{subscriber_id}:{key}",
            zone=zone,
        )
    return Redeemed(posted=posted, grant_id=issued.grant.id, cost=cost)


def reverse_bill(
    session: Session, *, actor: Actor, subscriber_id: int, bill_ref: str, zone: str
) -> Posted:
    """Take back a reversed bill's points: its own lot first, then others, never below zero."""
    _require_write(actor)
    _in_scope(session, actor=actor, subscriber_id=subscriber_id)
    ref = bill_ref.strip()
    earn = repo.entry_by_key(session, f"bill:{subscriber_id}:{ref}")
    if earn is None or earn.subscriber_id != subscriber_id:
        raise NotFound(f"no points were earned for bill {ref!r}", field="bill_ref")
    key = f"reverse:bill:{subscriber_id}:{ref}"
    seen = repo.entry_by_key(session, key)
    if seen is not None:
        return _replayed(session, seen, subscriber_id)
    now = clock.now()
    repo.begin_write(session)
    try:
        with session.begin_nested():
            repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
            repo.lock_points_balance(session, subscriber_id)
            _expire_due(session, subscriber_id=subscriber_id, now=now)
            own = repo.lot_of_entry(session, earn.id)
            others = [
                lot
                for lot in repo.open_lots(session, subscriber_id, now=now)
                if own is None or lot.id != own.id
            ]
            lots = ([own] if own is not None and own.remaining > 0 else []) + others
            available = sum(lot.remaining for lot in lots)
            taken = min(earn.points, available)
            if taken:
                _take(session, subscriber_id=subscriber_id, lots=lots, amount=taken)
                if not repo.move_points(
                    session, subscriber_id=subscriber_id, points=-taken, at=now
                ):
                    raise RuntimeError(f"points account {subscriber_id} is below its lots")
            entry = repo.add_entry(
                session,
                PointsEntry(
                    subscriber_id=subscriber_id,
                    kind=EntryKind.REVERSE.value,
                    points=-taken,
                    idempotency_key=key,
                    reason=f"bill {ref} reversed",
                    ref=f"bill:{ref}",
                    # Points already spent cannot be taken back: they are written off, stated here.
                    details={"earned": earn.points, "unrecovered": earn.points - taken},
                    at=now,
                ),
                counter=COUNTER_ACCOUNT[EntryKind.REVERSE],
                member=MEMBER_ACCOUNT,
            )
            session.flush()
    except IntegrityError:
        winner = repo.entry_by_key(session, key)
        if winner is None:
            raise
        return _replayed(session, winner, subscriber_id)
    org.record_audit(
        session,
        actor=actor,
        action="points.reverse",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"bill_ref": ref, "points": taken, "unrecovered": earn.points - taken},
    )
    return Posted(entry=entry, replayed=False, balance=repo.points_balance(session, subscriber_id))


def expire_points_of(session: Session, *, subscriber_id: int) -> int:
    """Expire one member's due lots (the expiry job's step); returns the points expired."""
    now = clock.now()
    repo.begin_write(session)
    with session.begin_nested():
        repo.lock_points_balance(session, subscriber_id)
        return _expire_due(session, subscriber_id=subscriber_id, now=now)


def expire_points(session: Session, *, actor: Actor, limit: int = 500) -> tuple[int, int]:
    """Expire due lots of up to `limit` members; (members, points). Run until it returns (0, 0)."""
    owners = repo.expired_lot_owners(session, now=clock.now(), after=0, limit=limit)
    total = 0
    for sid in owners:
        total += expire_points_of(session, subscriber_id=sid)
    if owners:
        org.record_audit(
            session,
            actor=actor,
            action="points.expire",
            target_type="members",
            target_id=str(len(owners)),
            details={"members": len(owners), "points": total},
        )
    return len(owners), total


def forfeit_points(session: Session, *, actor: Actor, subscriber_id: int, reason: str) -> int:
    """A churned member's points are forfeited (binding); returns how many."""
    now = clock.now()
    key = f"forfeit:{subscriber_id}"
    if repo.entry_by_key(session, key) is not None:
        return 0
    repo.begin_write(session)
    with session.begin_nested():
        repo.ensure_points_account(session, subscriber_id=subscriber_id, at=now)
        balance = repo.lock_points_balance(session, subscriber_id)
        if balance <= 0:
            return 0
        _take(
            session,
            subscriber_id=subscriber_id,
            lots=repo.all_open_lots(session, subscriber_id),
            amount=balance,
        )
        repo.move_points(session, subscriber_id=subscriber_id, points=-balance, at=now)
        repo.add_entry(
            session,
            PointsEntry(
                subscriber_id=subscriber_id,
                kind=EntryKind.FORFEIT.value,
                points=-balance,
                idempotency_key=key,
                reason=reason[:255],
                at=now,
            ),
            counter=COUNTER_ACCOUNT[EntryKind.FORFEIT],
            member=MEMBER_ACCOUNT,
        )
        session.flush()
    org.record_audit(
        session,
        actor=actor,
        action="points.forfeit",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"points": balance, "reason": reason[:255]},
    )
    return balance


def points_balance(session: Session, *, subscriber_id: int) -> int:
    """A member's points balance."""
    return repo.points_balance(session, subscriber_id)


def ledger_sum(session: Session, *, subscriber_id: int) -> int:
    """The sum of a member's postings (what the balance must always equal)."""
    return repo.ledger_sum(session, subscriber_id)
