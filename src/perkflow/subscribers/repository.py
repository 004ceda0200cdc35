"""Queries over the subscriber master."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Table, any_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from perkflow.db import postgres_driver
from perkflow.subscribers.models import H5LinkNonce, StatusEvent, Subscriber


def get(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def get_for_share(session: Session, subscriber_id: int) -> Subscriber | None:
    # FOR SHARE: a concurrent status change (an UPDATE) waits until the caller commits.
    return session.scalar(
        select(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )


_SUBSCRIBERS = cast(Table, Subscriber.__table__)
# Share-locked in id order: concurrent holders of overlapping sets never wait on each other in
# a cycle, and a status change (an UPDATE) waits until the holder commits. PostgreSQL gets the
# ids as one array parameter (a short statement the driver prepares once), SQLite an IN list.
_HOLD_MANY = {
    dialect: select(_SUBSCRIBERS.c.id, _SUBSCRIBERS.c.province_code, _SUBSCRIBERS.c.status)
    .where(ids)
    .order_by(_SUBSCRIBERS.c.id)
    .with_for_update(read=True)
    for dialect, ids in (
        ("postgresql", _SUBSCRIBERS.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))),
        ("sqlite", _SUBSCRIBERS.c.id.in_(bindparam("ids", expanding=True))),
    )
}


_HOLD_MANY_PG = (
    "SELECT id, province_code, status FROM subscribers WHERE id = ANY(%(ids)s)"
    " ORDER BY id FOR SHARE"
)


def hold_many(session: Session, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(province, status) of each known id, share-locked until the caller commits."""
    driver = postgres_driver(session)  # the claim path's bulk read: straight to the driver
    if driver is not None:
        rows = driver.execute(_HOLD_MANY_PG, {"ids": list(ids)}).fetchall()
    else:
        rows = session.execute(_HOLD_MANY["sqlite"], {"ids": list(ids)}).all()
    return {int(i): (str(p), str(s)) for i, p, s in rows}


def statuses(session: Session, ids: Sequence[int]) -> dict[int, str]:
    rows = session.execute(select(Subscriber.id, Subscriber.status).where(Subscriber.id.in_(ids)))
    return {int(i): str(s) for i, s in rows}


def get_by_phone_hash(session: Session, phone_hash: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.phone_hash == phone_hash))


def page(
    session: Session,
    *,
    province: str | None,
    status: str | None,
    phone_hash: str | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Subscriber], int]:
    stmt = select(Subscriber)
    if province:
        stmt = stmt.where(Subscriber.province_code == province)
    if status:
        stmt = stmt.where(Subscriber.status == status)
    if phone_hash:
        stmt = stmt.where(Subscriber.phone_hash == phone_hash)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Subscriber.id).offset(offset).limit(limit)).all()
    return rows, total


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def counts_by(session: Session, *, group: str, province: str | None) -> list[tuple[str, str, int]]:
    """(group value, status, count) rows, grouped by province or city."""
    col = Subscriber.province_code if group == "province" else Subscriber.city_code
    stmt = select(col, Subscriber.status, func.count()).group_by(col, Subscriber.status)
    if province:
        stmt = stmt.where(Subscriber.province_code == province)
    return [(str(a), str(b), int(c)) for a, b, c in session.execute(stmt).all()]


def compare_and_set_status(
    session: Session, *, subscriber_id: int, expected: str, target: str, at: datetime
) -> bool:
    """Move the status only if nobody changed it meanwhile; True when this call moved it."""
    result = session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.status == expected)
        .values(status=target, status_changed_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def events(session: Session, subscriber_id: int) -> Sequence[StatusEvent]:
    return session.scalars(
        select(StatusEvent)
        .where(StatusEvent.subscriber_id == subscriber_id)
        .order_by(StatusEvent.id)
    ).all()


def insert_many(session: Session, rows: list[dict[str, Any]]) -> None:
    # The table, not the mapped class: a plain Core executemany, no ORM bulk bookkeeping.
    session.execute(insert(cast(Table, Subscriber.__table__)), rows)


def insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    session.execute(insert(StatusEvent), rows)


def delete_all(session: Session) -> int:
    session.execute(delete(H5LinkNonce))
    session.execute(delete(StatusEvent))
    return int(session.execute(delete(Subscriber)).rowcount)  # type: ignore[attr-defined]


def phones_and_provinces(session: Session, ids: Sequence[int]) -> list[tuple[int, bytes, str]]:
    """(id, phone_enc, province) of the known subscribers among the ids."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone_enc, Subscriber.province_code).where(
            Subscriber.id.in_(ids)
        )
    )
    return [(int(i), bytes(p), str(c)) for i, p, c in rows]


def plan_facts(session: Session, ids: Sequence[int]) -> list[tuple[int, int, Any, str, str]]:
    """(id, plan fee, joined on, status, province) of the known subscribers among the ids."""
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.plan_fee_fen,
            Subscriber.joined_on,
            Subscriber.status,
            Subscriber.province_code,
        ).where(Subscriber.id.in_(ids))
    )
    return [(int(i), int(f), j, str(s), str(p)) for i, f, j, s, p in rows]


def set_plan_fee(session: Session, *, subscriber_id: int, plan_fee_fen: int) -> int | None:
    """Set a subscriber's plan fee; the previous fee, or None if there is no such subscriber."""
    before = session.scalar(
        select(Subscriber.plan_fee_fen).where(Subscriber.id == subscriber_id).with_for_update()
    )
    if before is None:
        return None
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(plan_fee_fen=plan_fee_fen)
        .execution_options(synchronize_session=False)
    )
    return int(before)


def add_link_nonce(
    session: Session, *, nonce: str, subscriber_id: int, expires_at: datetime
) -> None:
    session.execute(
        insert(H5LinkNonce).values(nonce=nonce, subscriber_id=subscriber_id, expires_at=expires_at)
    )


def consume_link_nonce(session: Session, *, nonce: str, subscriber_id: int, now: datetime) -> bool:
    """Use up a link's nonce: of two uses, even at the same moment, exactly one deletes it."""
    result = session.execute(
        delete(H5LinkNonce)
        .where(
            H5LinkNonce.nonce == nonce,
            H5LinkNonce.subscriber_id == subscriber_id,
            H5LinkNonce.expires_at > now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def prune_link_nonces(session: Session, *, before: datetime, limit: int = 1000) -> None:
    """Forget nonces of links that expired unused; rows another issuer holds are skipped."""
    stale = (
        select(H5LinkNonce.nonce)
        .where(H5LinkNonce.expires_at < before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        delete(H5LinkNonce)
        .where(H5LinkNonce.nonce.in_(stale.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def statuses_changed_after(session: Session, *, after: int) -> tuple[dict[int, str], int]:
    """The status of each subscriber with an event after `after`, and the last event id."""
    changed = select(StatusEvent.subscriber_id).where(StatusEvent.id > after)
    rows = session.execute(
        select(Subscriber.id, Subscriber.status).where(Subscriber.id.in_(changed))
    )
    last = session.scalar(select(func.max(StatusEvent.id)))
    return {int(i): str(s) for i, s in rows}, int(last or 0)
