"""Dispatch: contacts queued, leased, suppressed, deferred and settled; receipts; caps' counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact, CampaignResponse
from perkflow.campaigns.rules import Cell, ContactStatus

from ._sql import _CONTACTS, _insert, _rowcount


def insert_contacts_ignore(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert contact rows; a subscriber already in the campaign keeps their row (resumable)."""
    if not rows:
        return 0
    # RETURNING names only the rows inserted (rowcount is not reliable for ON CONFLICT on psycopg).
    # One cached statement run over the rows (insertmanyvalues), not a fresh multi-row VALUES
    # statement compiled per chunk.
    inserted = session.connection().execute(
        _insert(session, CampaignContact.__table__)
        .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
        .returning(CampaignContact.__table__.c.id),
        list(rows),
    )
    return len(inserted.all())


def count_taken_up(session: Session, *, campaign_id: int) -> int:
    """Target contacts that responded (took the offer up): what the budget has paid for."""
    return int(
        session.scalar(
            select(func.count(func.distinct(CampaignResponse.contact_id))).where(
                CampaignResponse.campaign_id == campaign_id,
                CampaignResponse.cell == Cell.TARGET.value,
            )
        )
        or 0
    )


def count_contacted(session: Session, *, campaign_id: int) -> int:
    """Target contacts a message went (or is going) out to: what caps count."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.status.in_(
                    [
                        ContactStatus.SENDING.value,
                        ContactStatus.SENT.value,
                        ContactStatus.DELIVERED.value,
                    ]
                ),
            )
        )
        or 0
    )


@dataclass(frozen=True, slots=True)
class DueContact:
    """What the claim step needs to decide about a due contact (no personalisation fields)."""

    id: int
    wave_id: int
    subscriber_id: int
    channel: str
    status: str
    attempts: int
    province_code: str | None


@dataclass(frozen=True, slots=True)
class LeasedContact:
    """A contact this worker now holds: `attempts` counts the attempt just leased."""

    id: int
    campaign_id: int
    wave_id: int
    subscriber_id: int
    channel: str
    variant: str | None
    attempts: int
    fields: dict[str, Any] | None


def _due(now: datetime) -> Any:
    """Queued and due, or sending under a lease that ran out."""
    c = _CONTACTS.c
    return or_(
        and_(
            c.status == ContactStatus.QUEUED.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        ),
        and_(c.status == ContactStatus.SENDING.value, c.lease_until < now),
    )


def due_contacts(
    session: Session, *, wave_ids: Sequence[int], now: datetime, limit: int, skip_locked: bool
) -> list[DueContact]:
    """Queued contacts due now and sending ones whose lease ran out, in id order."""
    # At most `limit` of each status per wave: a wave held back by its throttle does not hide
    # the due contacts of the others.
    c = _CONTACTS.c
    cols = (c.id, c.wave_id, c.subscriber_id, c.channel, c.status, c.attempts, c.province_code)
    conn = session.connection()
    found: list[DueContact] = []
    for wave_id in wave_ids:
        # One (wave, status) pair a query, so each walks ix_…_wave_id_status_id in id order and
        # stops at the limit; the OR over statuses (and IN over waves) made SQLite read and sort
        # every row of the wave per batch, quadratic over a 1M list.
        expired = select(*cols).where(
            c.wave_id == wave_id,
            c.status == ContactStatus.SENDING.value,
            c.lease_until < now,
        )
        queued = select(*cols).where(
            c.wave_id == wave_id,
            c.status == ContactStatus.QUEUED.value,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        )
        for stmt in (expired, queued):
            stmt = stmt.order_by(c.id).limit(limit)
            if skip_locked:
                # Two workers on PostgreSQL take disjoint batches instead of queueing on the
                # same rows.
                stmt = stmt.with_for_update(skip_locked=True)
            found.extend(DueContact(*row) for row in conn.execute(stmt))
    found.sort(key=lambda d: d.id)
    return found


def lease_contacts(
    session: Session, *, contact_ids: Sequence[int], now: datetime, until: datetime
) -> list[LeasedContact]:
    """Take the contacts that are still due for sending, in one statement; those taken, by id."""
    if not contact_ids:
        return []
    c = _CONTACTS.c
    # The compare-and-set is the due condition itself: a contact another worker leased (or
    # settled into a later retry) since it was read is not due any more and is left alone.
    stmt = (
        update(_CONTACTS)
        .where(c.id.in_(list(contact_ids)), _due(now))
        .values(status=ContactStatus.SENDING.value, lease_until=until, attempts=c.attempts + 1)
        .returning(
            c.id,
            c.campaign_id,
            c.wave_id,
            c.subscriber_id,
            c.channel,
            c.variant,
            c.attempts,
            c.fields,
        )
    )
    leased = [LeasedContact(*row) for row in session.connection().execute(stmt)]
    leased.sort(key=lambda x: x.id)
    return leased


def _row_id() -> Any:
    return bindparam("row_id", type_=_CONTACTS.c.id.type)


# Prebuilt for executemany: one statement, one parameter set per contact.
_SUPPRESS = (
    update(_CONTACTS)
    .where(_CONTACTS.c.id == _row_id(), _CONTACTS.c.status == bindparam("expected"))
    .values(
        status=ContactStatus.SUPPRESSED.value,
        reason=bindparam("v_reason", type_=_CONTACTS.c.reason.type),
        lease_until=None,
        # The moment it would have gone out: an assigned target stays in the evaluation (intent
        # to treat) and its responses are attributed from then on, as a held control's are.
        contacted_at=func.coalesce(
            _CONTACTS.c.contacted_at, bindparam("v_at", type_=_CONTACTS.c.contacted_at.type)
        ),
    )
)


_DEFER = (
    update(_CONTACTS)
    .where(_CONTACTS.c.id == _row_id(), _CONTACTS.c.status == bindparam("expected"))
    .values(
        status=ContactStatus.QUEUED.value,
        next_attempt_at=bindparam("v_next", type_=_CONTACTS.c.next_attempt_at.type),
        lease_until=None,
    )
)


def suppress_contacts(
    session: Session, *, rows: Sequence[tuple[int, str, str]], at: datetime
) -> int:
    """Suppress contacts (id, status seen, reason) still in the status seen; how many."""
    if not rows:
        return 0
    params = [{"row_id": i, "expected": st, "v_reason": r, "v_at": at} for i, st, r in rows]
    return _rowcount(session.connection().execute(_SUPPRESS, params))


def defer_contacts(session: Session, *, rows: Sequence[tuple[int, str, datetime]]) -> int:
    """Queue contacts (id, status seen, when) again for later, without using an attempt."""
    if not rows:
        return 0
    params = [{"row_id": i, "expected": st, "v_next": at} for i, st, at in rows]
    return _rowcount(session.connection().execute(_DEFER, params))


@lru_cache(maxsize=32)
def _settle_stmt(target: str, columns: tuple[str, ...]) -> Any:
    c = _CONTACTS.c
    return (
        update(_CONTACTS)
        .where(
            c.id == _row_id(),
            c.status == ContactStatus.SENDING.value,
            c.attempts == bindparam("held_attempts", type_=c.attempts.type),
        )
        .values(
            status=target,
            lease_until=None,
            **{k: bindparam(f"v_{k}", type_=c[k].type) for k in columns},
        )
    )


def settle_contacts(session: Session, *, target: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Record outcomes of attempts this worker holds, one statement over the rows; how many."""
    # Each row: `contact_id`, `attempts` (the attempt held) and the same columns to set. A contact
    # whose lease was lost (status or attempts moved on) is left alone.
    if not rows:
        return 0
    columns = tuple(sorted(k for k in rows[0] if k not in ("contact_id", "attempts")))
    params = [
        {
            "row_id": r["contact_id"],
            "held_attempts": r["attempts"],
            **{f"v_{k}": r[k] for k in columns},
        }
        for r in rows
    ]
    return _rowcount(session.connection().execute(_settle_stmt(target, columns), params))


def suppress_queued(session: Session, *, campaign_id: int, reason: str, at: datetime) -> int:
    c = CampaignContact
    result = session.execute(
        update(c)
        .where(c.campaign_id == campaign_id, c.status == ContactStatus.QUEUED.value)
        .values(
            status=ContactStatus.SUPPRESSED.value,
            reason=reason,
            contacted_at=func.coalesce(c.contacted_at, at),
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def apply_receipt(
    session: Session, *, message_ref: str, delivered: bool, error: str | None, at: datetime
) -> int:
    """A delivery report: a sent contact becomes delivered or failed (once)."""
    c = CampaignContact
    values: dict[str, Any] = (
        {"status": ContactStatus.DELIVERED.value, "delivered_at": at}
        if delivered
        else {"status": ContactStatus.FAILED.value, "error": (error or "undelivered")[:255]}
    )
    result = session.execute(
        update(c)
        .where(c.message_ref == message_ref, c.status == ContactStatus.SENT.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def unreceipted(
    session: Session, *, channel: str, since: datetime, before: datetime, limit: int
) -> list[str]:
    """Message refs of contacts still `sent` on a channel, sent in [since, before), oldest first."""
    c = CampaignContact
    return list(
        session.scalars(
            select(c.message_ref)
            .where(
                c.channel == channel,
                c.status == ContactStatus.SENT.value,
                c.message_ref.is_not(None),
                c.contacted_at >= since,
                c.contacted_at < before,
            )
            .order_by(c.contacted_at, c.id)
            .limit(limit)
        )
    )


def recent_on_channel(
    session: Session, *, subscriber_id: int, channel: str, since: datetime
) -> int:
    """This subscriber's contacts on a channel since a time, and the ones about to go out."""
    c = CampaignContact
    return int(
        session.scalar(
            select(func.count())
            .select_from(c)
            .where(
                c.subscriber_id == subscriber_id,
                c.channel == channel,
                or_(
                    c.status.in_([ContactStatus.QUEUED.value, ContactStatus.SENDING.value]),
                    and_(
                        c.status.in_([ContactStatus.SENT.value, ContactStatus.DELIVERED.value]),
                        c.contacted_at >= since,
                    ),
                ),
            )
        )
        or 0
    )
