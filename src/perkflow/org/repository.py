"""Queries over organisation tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

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
