"""Queries over organisation tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from perkflow.db import postgres_driver
from perkflow.org.models import ApiKey, AuditEntry, LoginAttempt, Region, StaffUser

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


def recent_failures(
    session: Session, *, username: str, ip: str, since: datetime
) -> tuple[int, int]:
    """Failed sign-ins since a time, for this username and for this address."""
    by_user = session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.username == username, LoginAttempt.at >= since, ~LoginAttempt.success)
    )
    by_ip = session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.ip == ip, LoginAttempt.at >= since, ~LoginAttempt.success)
    )
    return by_user or 0, by_ip or 0


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
