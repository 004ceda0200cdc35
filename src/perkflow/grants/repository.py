"""Queries over grants; every state change is a compare-and-set on its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow import bulk
from perkflow.grants.models import Grant, GrantCounter, GrantEvent, OutboxMessage, PartnerCallback
from perkflow.grants.rules import LIVE, OutboxKind, OutboxStatus


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def begin_write(session: Session) -> None:
    """Open the database transaction now, so a SAVEPOINT that follows nests inside it."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    # pysqlite begins a transaction only before its first INSERT/UPDATE/DELETE; a SAVEPOINT
    # issued earlier would start one of its own, and its RELEASE would commit it. IMMEDIATE
    # takes the write lock now (waiting up to busy_timeout), as SQLite serialises writers anyway.
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get(session: Session, grant_id: int) -> Grant | None:
    return session.get(Grant, grant_id)


def get_fresh(session: Session, grant_id: int) -> Grant | None:
    # populate_existing: a CAS just ran as a Core UPDATE, so any loaded copy is stale.
    return session.scalar(
        select(Grant).where(Grant.id == grant_id).execution_options(populate_existing=True)
    )


def lock(session: Session, grant_id: int) -> Grant | None:
    """The grant, row-locked until commit (PostgreSQL; SQLite serialises writers anyway)."""
    return session.scalar(
        select(Grant)
        .where(Grant.id == grant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def get_by_key(session: Session, idempotency_key: str) -> Grant | None:
    return session.scalar(
        select(Grant)
        .where(Grant.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    )


def lock_live_of_subscriber(session: Session, subscriber_id: int) -> Sequence[Grant]:
    """The subscriber's live grants, row-locked in primary-key order (no deadlock between two)."""
    return session.scalars(
        select(Grant)
        .where(Grant.subscriber_id == subscriber_id, Grant.status.in_([s.value for s in LIVE]))
        .order_by(Grant.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()


def move(
    session: Session, *, grant_id: int, expected: str, target: str, at: datetime, **values: Any
) -> bool:
    """Move a grant from `expected` to `target`; True when this call moved it."""
    result = session.execute(
        update(Grant)
        .where(Grant.id == grant_id, Grant.status == expected)
        .values(status=target, updated_at=at, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def set_paused_from(session: Session, *, grant_id: int, expected: str, target: str) -> bool:
    """Change where a paused grant resumes to (a partner confirmed it while paused)."""
    result = session.execute(
        update(Grant)
        .where(
            Grant.id == grant_id,
            Grant.status == "paused",
            Grant.paused_from == expected,
        )
        .values(paused_from=target)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def set_order_id(session: Session, *, grant_id: int, order_id: str) -> None:
    session.execute(
        update(Grant)
        .where(Grant.id == grant_id, Grant.partner_order_id.is_(None))
        .values(partner_order_id=order_id)
        .execution_options(synchronize_session=False)
    )


def add_event(
    session: Session,
    *,
    grant_id: int,
    from_status: str | None,
    to_status: str,
    reason: str,
    at: datetime,
) -> None:
    session.add(
        GrantEvent(
            grant_id=grant_id,
            from_status=from_status,
            to_status=to_status,
            reason=reason[:255],
            at=at,
        )
    )


def events(session: Session, grant_ids: Sequence[int]) -> Sequence[GrantEvent]:
    if not grant_ids:
        return []
    return session.scalars(
        select(GrantEvent).where(GrantEvent.grant_id.in_(grant_ids)).order_by(GrantEvent.id)
    ).all()


def ensure_counter(session: Session, *, subscriber_id: int, benefit_id: int, period: str) -> None:
    """Insert the counter row at 0 unless it exists; concurrent inserts do not fail."""
    values = {
        "subscriber_id": subscriber_id,
        "benefit_id": benefit_id,
        "period": period,
        "count": 0,
    }
    if session.get_bind().dialect.name == "postgresql":
        session.execute(postgresql.insert(GrantCounter).values(values).on_conflict_do_nothing())
    else:
        session.execute(sqlite.insert(GrantCounter).values(values).on_conflict_do_nothing())


def bump_counter(
    session: Session, *, subscriber_id: int, benefit_id: int, period: str, limit: int | None
) -> bool:
    """Add one grant to a counter if it stays within `limit`; True when this call counted."""
    stmt = update(GrantCounter).where(
        GrantCounter.subscriber_id == subscriber_id,
        GrantCounter.benefit_id == benefit_id,
        GrantCounter.period == period,
    )
    if limit is not None:
        stmt = stmt.where(GrantCounter.count < limit)
    result = session.execute(
        stmt.values(count=GrantCounter.count + 1).execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def drop_counter(session: Session, *, subscriber_id: int, benefit_id: int, period: str) -> None:
    session.execute(
        update(GrantCounter)
        .where(
            GrantCounter.subscriber_id == subscriber_id,
            GrantCounter.benefit_id == benefit_id,
            GrantCounter.period == period,
            GrantCounter.count > 0,
        )
        .values(count=GrantCounter.count - 1)
        .execution_options(synchronize_session=False)
    )


def counter(session: Session, *, subscriber_id: int, benefit_id: int, period: str) -> int:
    value = session.scalar(
        select(GrantCounter.count).where(
            GrantCounter.subscriber_id == subscriber_id,
            GrantCounter.benefit_id == benefit_id,
            GrantCounter.period == period,
        )
    )
    return int(value or 0)


def add_message(
    session: Session, *, grant_id: int, kind: OutboxKind, at: datetime, payload: dict[str, Any]
) -> OutboxMessage:
    message = OutboxMessage(
        grant_id=grant_id,
        kind=kind.value,
        status=OutboxStatus.PENDING.value,
        attempts=0,
        next_attempt_at=at,
        payload=payload,
        created_at=at,
        updated_at=at,
    )
    session.add(message)
    return message


def get_message(session: Session, message_id: int) -> OutboxMessage | None:
    return session.scalar(
        select(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .execution_options(populate_existing=True)
    )


def messages_of(session: Session, grant_id: int, kind: OutboxKind) -> Sequence[OutboxMessage]:
    return session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.grant_id == grant_id, OutboxMessage.kind == kind.value)
        .order_by(OutboxMessage.id)
        .execution_options(populate_existing=True)
    ).all()


def due_message_ids(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Pending messages whose time has come and whose lease (if any) ran out, oldest first."""
    rows = session.scalars(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.status == OutboxStatus.PENDING.value,
            OutboxMessage.next_attempt_at <= now,
            (OutboxMessage.leased_until.is_(None)) | (OutboxMessage.leased_until < now),
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    return [int(i) for i in rows]


def lease(
    session: Session, *, message_id: int, worker: str, now: datetime, until: datetime
) -> bool:
    """Take a message for `worker` if nobody holds a live lease on it; counts one attempt."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == OutboxStatus.PENDING.value,
            OutboxMessage.next_attempt_at <= now,
            (OutboxMessage.leased_until.is_(None)) | (OutboxMessage.leased_until < now),
        )
        .values(
            leased_until=until,
            leased_by=worker,
            attempts=OutboxMessage.attempts + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def settle_message(
    session: Session,
    *,
    message_id: int,
    at: datetime,
    status: OutboxStatus,
    worker: str | None = None,
    expected: OutboxStatus = OutboxStatus.PENDING,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
    attempts_delta: int = 0,
) -> bool:
    """Finish, reschedule or kill a message; with `worker`, only while that worker holds it."""
    stmt = update(OutboxMessage).where(
        OutboxMessage.id == message_id, OutboxMessage.status == expected.value
    )
    if worker is not None:
        stmt = stmt.where(OutboxMessage.leased_by == worker)
    values: dict[str, Any] = {
        "status": status.value,
        "leased_until": None,
        "leased_by": None,
        "updated_at": at,
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if error is not None:
        values["last_error"] = error[:500]
    if attempts_delta:
        values["attempts"] = OutboxMessage.attempts + attempts_delta
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    return bool(_rowcount(result))


def dead_page(
    session: Session, *, offset: int, limit: int
) -> tuple[Sequence[tuple[OutboxMessage, Grant]], int]:
    stmt = select(OutboxMessage, Grant).join(Grant, Grant.id == OutboxMessage.grant_id)
    stmt = stmt.where(OutboxMessage.status == OutboxStatus.DEAD.value)
    total = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.DEAD.value)
    )
    rows = session.execute(stmt.order_by(OutboxMessage.id.desc()).offset(offset).limit(limit))
    return [(m, g) for m, g in rows], int(total or 0)


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    )
    return {str(s): int(n) for s, n in rows}


def add_callback(
    session: Session,
    *,
    partner_id: int,
    callback_id: str,
    grant_id: int,
    outcome: str,
    at: datetime,
) -> PartnerCallback:
    row = PartnerCallback(
        partner_id=partner_id,
        callback_id=callback_id,
        grant_id=grant_id,
        outcome=outcome,
        received_at=at,
    )
    session.add(row)
    return row


def of_subscriber(
    session: Session, *, subscriber_id: int, partner_id: int | None, offset: int, limit: int
) -> tuple[Sequence[Grant], int]:
    stmt = select(Grant).where(Grant.subscriber_id == subscriber_id)
    if partner_id is not None:
        stmt = stmt.where(Grant.partner_id == partner_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(Grant.id.desc()).offset(offset).limit(limit)).all()
    return rows, int(total or 0)


def created_times(session: Session, *, benefit_id: int, since: datetime) -> Sequence[datetime]:
    return session.scalars(
        select(Grant.created_at).where(Grant.benefit_id == benefit_id, Grant.created_at >= since)
    ).all()


def expirable_ids(session: Session, *, now: datetime, status: str, limit: int) -> list[int]:
    rows = session.scalars(
        select(Grant.id)
        .where(Grant.status == status, Grant.valid_until < now)
        .order_by(Grant.id)
        .limit(limit)
    )
    return [int(i) for i in rows]


def live_subscriber_ids(session: Session, *, after: int, limit: int) -> list[int]:
    """Subscribers holding live grants, in id order from `after`, one page at a time."""
    rows = session.scalars(
        select(Grant.subscriber_id)
        .where(Grant.status.in_([s.value for s in LIVE]), Grant.subscriber_id > after)
        .group_by(Grant.subscriber_id)
        .order_by(Grant.subscriber_id)
        .limit(limit)
    )
    return [int(i) for i in rows]


def status_counts(session: Session, grant_ids: Sequence[int]) -> dict[str, int]:
    rows = session.execute(
        select(Grant.status, func.count()).where(Grant.id.in_(grant_ids)).group_by(Grant.status)
    )
    return {str(s): int(n) for s, n in rows}


def live_statuses(session: Session, subscriber_ids: Sequence[int]) -> dict[int, set[str]]:
    """For each subscriber, the statuses their live grants are in."""
    rows = session.execute(
        select(Grant.subscriber_id, Grant.status)
        .where(Grant.subscriber_id.in_(subscriber_ids), Grant.status.in_([s.value for s in LIVE]))
        .distinct()
    )
    found: dict[int, set[str]] = {}
    for sid, status in rows:
        found.setdefault(int(sid), set()).add(str(status))
    return found


def uses_after(
    session: Session, *, after_id: int, limit: int
) -> list[tuple[int, int, int, datetime]]:
    """(event id, subscriber, benefit, at) of grants moved to used after an event id."""
    rows = session.execute(
        select(GrantEvent.id, Grant.subscriber_id, Grant.benefit_id, GrantEvent.at)
        .join(Grant, Grant.id == GrantEvent.grant_id)
        .where(GrantEvent.id > after_id, GrantEvent.to_status == "used")
        .order_by(GrantEvent.id)
        .limit(limit)
    )
    return [(int(i), int(s), int(b), at) for i, s, b, at in rows]


# ---- set-based issuing (a group of grants in one statement per table) ----------------------------

_KEYS_PER_SELECT = 5_000  # bounded IN lists (SQLite allows 32,766 variables)


def grants_by_keys(session: Session, keys: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """(id, subscriber, benefit) of the grants already holding some of these keys."""
    out: dict[str, tuple[int, int, int]] = {}
    t = Grant.__table__
    for start in range(0, len(keys), _KEYS_PER_SELECT):
        rows = session.execute(
            select(t.c.idempotency_key, t.c.id, t.c.subscriber_id, t.c.benefit_id).where(
                t.c.idempotency_key.in_(list(keys[start : start + _KEYS_PER_SELECT]))
            )
        )
        out.update({str(k): (int(i), int(s), int(b)) for k, i, s, b in rows})
    return out


GRANT_COLUMNS = (
    "idempotency_key",
    "subscriber_id",
    "benefit_id",
    "partner_id",
    "source",
    "status",
    "period",
    "sale_price_fen",
    "cost_price_fen",
    "partner_order_id",
    "valid_until",
    "created_at",
    "updated_at",
    "fulfilled_at",
)
EVENT_COLUMNS = ("grant_id", "from_status", "to_status", "reason", "at")
MESSAGE_COLUMNS = (
    "grant_id",
    "kind",
    "status",
    "attempts",
    "next_attempt_at",
    "payload",
    "created_at",
    "updated_at",
)


def insert_grants(session: Session, rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    """Insert grants (GRANT_COLUMNS) whose key is new; {key: id} of the rows this call wrote."""
    written = bulk.insert(
        session,
        Grant.__table__,
        GRANT_COLUMNS,
        rows,
        conflict=["idempotency_key"],
        returning=["idempotency_key", "id"],
    )
    return {str(k): int(i) for k, i in written}


def set_order_ids(session: Session, pairs: Sequence[tuple[int, str]]) -> None:
    """Write (grant id, order id) pairs, e.g. the work orders numbered after their grant's id."""
    bulk.update_by_key(session, Grant.__table__, key="id", column="partner_order_id", pairs=pairs)


def insert_events(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Append grant events (EVENT_COLUMNS) in one statement."""
    bulk.insert(session, GrantEvent.__table__, EVENT_COLUMNS, rows)


def insert_messages(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Queue outbox messages (MESSAGE_COLUMNS) in one statement; they commit with their grants."""
    bulk.insert(session, OutboxMessage.__table__, MESSAGE_COLUMNS, rows)


def add_to_counters(session: Session, rows: Sequence[tuple[int, int, str, int]]) -> None:
    """Add n to each (subscriber, benefit, period) counter of benefits without a limit."""
    # Key order: every writer of these rows locks them alike (no deadlock on PostgreSQL).
    bulk.insert(
        session,
        GrantCounter.__table__,
        ("subscriber_id", "benefit_id", "period", "count"),
        sorted(rows),
        conflict=["subscriber_id", "benefit_id", "period"],
        add_on_conflict="count",
    )
