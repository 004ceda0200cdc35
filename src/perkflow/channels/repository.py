"""Queries over the in-app inbox; a duplicate contact is decided by the unique constraint."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.channels.models import InboxMessage


def _insert(session: Session) -> Any:
    """The dialect's INSERT … ON CONFLICT construct (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(InboxMessage)
    return sqlite.insert(InboxMessage)


def insert_contacts(session: Session, rows: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Insert inbox rows keyed by contact id, skipping contacts already there; contact → row id."""
    if not rows:
        return {}
    # One cached statement over the rows (executemany), not a multi-row VALUES compiled each time.
    table = cast(Table, InboxMessage.__table__)
    stmt = (
        postgresql.insert(table)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(table)
    )
    session.connection().execute(
        stmt.on_conflict_do_nothing(index_elements=["contact_id"]), list(rows)
    )
    # Read back new and pre-existing rows alike: a resend gets the ref of the first delivery.
    found = session.execute(
        select(InboxMessage.contact_id, InboxMessage.id).where(
            InboxMessage.contact_id.in_([r["contact_id"] for r in rows])
        )
    )
    return {int(c): int(i) for c, i in found if c is not None}


def add(session: Session, message: InboxMessage) -> InboxMessage:
    session.add(message)
    session.flush()  # the caller shows the new id
    return message


def list_for(session: Session, *, subscriber_id: int, limit: int) -> list[InboxMessage]:
    return list(
        session.scalars(
            select(InboxMessage)
            .where(InboxMessage.subscriber_id == subscriber_id)
            .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
            .limit(limit)
        )
    )


def count_unread(session: Session, *, subscriber_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(InboxMessage)
            .where(InboxMessage.subscriber_id == subscriber_id, InboxMessage.read_at.is_(None))
        )
        or 0
    )


def get(session: Session, *, message_id: int) -> InboxMessage | None:
    return session.get(InboxMessage, message_id)


def set_read(session: Session, *, subscriber_id: int, message_id: int, at: datetime) -> int:
    """Mark one of the subscriber's own messages read (once); rows changed."""
    result = session.execute(
        update(InboxMessage)
        .where(
            InboxMessage.id == message_id,
            InboxMessage.subscriber_id == subscriber_id,
            InboxMessage.read_at.is_(None),
        )
        .values(read_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
