"""Queries over organisation tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.db import UTCDateTime, postgres_driver
from perkflow.org.models import ApiKey, AuditEntry, LoginThrottle, Region, StaffUser

# On the Table, not the mapped class: a plain Core insert, no ORM bulk-persistence layer.
_AUDIT = insert(cast(Table, AuditEntry.__table__))


def get_region(session: Session, code: str) -> Region | None:
    return session.get(Region, code)


def regions_by_codes(session: Session, codes: set[str]) -> Sequence[Region]:
    return session.scalars(select(Region).where(Region.code.in_(sorted(codes)))).all()


def regions_at_level(
    session: Session, level: str, under_path: str | None = None
) -> Sequence[Region]:
    stmt = select(Region).where(Region.level == level)
    if under_path:
        stmt = stmt.where(Region.path.startswith(under_path + "/"))
    return session.scalars(stmt.order_by(Region.code)).all()


def count_regions(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Region)) or 0


def get_staff_by_username(session: Session, username: str) -> StaffUser | None:
    return session.scalar(select(StaffUser).where(StaffUser.username == username))


def get_staff(session: Session, staff_id: int) -> StaffUser | None:
    return session.get(StaffUser, staff_id)


def list_staff(session: Session) -> Sequence[StaffUser]:
    return session.scalars(select(StaffUser).order_by(StaffUser.id)).all()


def take_turn(session: Session, *, key: str, limit: int, now: datetime, since: datetime) -> bool:
    """Count one try on a throttle key unless its window holds `limit` already (one upsert)."""
    # One statement decides and counts: of many parallel tries, the database lets exactly
    # `limit` through per window (the row is locked while it is checked and bumped).
    table = cast(Table, LoginThrottle.__table__)
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    at = bindparam("now", now, type_=UTCDateTime())
    stale = table.c.window_start < bindparam("since", since, type_=UTCDateTime())
    stmt = (
        ins(table)
        .values(key=key, window_start=at, count=1)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": case((stale, 1), else_=table.c.count + 1),
                "window_start": case((stale, at), else_=table.c.window_start),
            },
            where=stale | (table.c.count < limit),
        )
        .returning(table.c.count)
    )
    return session.execute(stmt).first() is not None


def give_back_turns(session: Session, *, keys: Sequence[str]) -> None:
    """Return tries that succeeded: only failures keep counting against the window."""
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key.in_(sorted(keys)), LoginThrottle.count > 0)
        .values(count=LoginThrottle.count - 1)
        .execution_options(synchronize_session=False)
    )


def prune_turns(session: Session, *, before: datetime, limit: int = 500) -> None:
    """Forget throttle windows that ended; rows another try holds are skipped, never waited for."""
    stale = (
        select(LoginThrottle.key)
        .where(LoginThrottle.window_start < before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        delete(LoginThrottle)
        .where(LoginThrottle.key.in_(stale.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def bump_session_epoch(session: Session, staff_id: int) -> None:
    """Move a staff member's session epoch on: every session signed with the old one ends."""
    session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(session_epoch=StaffUser.session_epoch + 1)
        .execution_options(synchronize_session=False)
    )


def get_api_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


def list_api_keys(session: Session) -> Sequence[ApiKey]:
    return session.scalars(select(ApiKey).order_by(ApiKey.id)).all()


def audit_page(
    session: Session, *, offset: int, limit: int, action: str | None = None
) -> tuple[Sequence[AuditEntry], int]:
    stmt = select(AuditEntry)
    count = select(func.count()).select_from(AuditEntry)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
        count = count.where(AuditEntry.action == action)
    rows = session.scalars(stmt.order_by(AuditEntry.id.desc()).offset(offset).limit(limit)).all()
    return rows, session.scalar(count) or 0


def insert_audit(session: Session, values: dict[str, Any]) -> None:
    """One audit row through a cached Core INSERT (hot paths: no ORM object, no flush)."""
    session.execute(_AUDIT, values)


# One statement whatever the row count: the per-row values travel as arrays.
_AUDIT_UNNEST_PG = (
    "INSERT INTO audit_log (at, actor_kind, actor_id, actor_name, action, target_type,"
    " target_id, details, ip)"
    " SELECT %(at)s, %(actor_kind)s, %(actor_id)s, %(actor_name)s, %(action)s, %(target_type)s,"
    " t, CAST(d AS json), %(ip)s"
    " FROM unnest(CAST(%(target_ids)s AS varchar[]), CAST(%(details)s AS text[])) AS u(t, d)"
)


def insert_audits(session: Session, rows: list[dict[str, Any]]) -> None:
    """Many audit rows of one actor and action (bulk hot paths): one statement on PostgreSQL."""
    driver = postgres_driver(session)  # the claim path's bulk insert: straight to the driver
    if driver is None:
        session.execute(_AUDIT, rows)
        return
    first = rows[0]
    driver.execute(
        _AUDIT_UNNEST_PG,
        {
            "at": first["at"].astimezone(UTC),
            **{k: first[k] for k in ("actor_kind", "actor_id", "actor_name", "action")},
            "target_type": first["target_type"],
            "ip": first["ip"],
            "target_ids": [r["target_id"] for r in rows],
            "details": [json.dumps(r["details"]) for r in rows],
        },
    )


def audit_of_target(
    session: Session, *, target_type: str, target_id: str, limit: int
) -> Sequence[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.target_type == target_type, AuditEntry.target_id == target_id)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return session.scalars(stmt).all()
