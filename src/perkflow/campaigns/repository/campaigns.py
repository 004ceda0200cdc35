"""Campaign rows: the write lock, a fresh read, the status compare-and-set, pages, triggers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from perkflow.campaigns.models import Campaign

from ._sql import _rowcount


def begin_write(session: Session) -> None:
    """Open the write transaction now on SQLite (BEGIN IMMEDIATE), so a claim is serialised."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not getattr(dbapi, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_fresh(session: Session, campaign_id: int) -> Campaign | None:
    # populate_existing: a CAS just ran as a Core UPDATE, so a loaded copy may be stale.
    return session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).execution_options(populate_existing=True)
    )


def move_campaign(
    session: Session,
    *,
    campaign_id: int,
    expected: str,
    target: str,
    at: datetime,
    version: int | None = None,
    **values: Any,
) -> bool:
    """Compare-and-set a campaign's status (and version when given); bumps the version."""
    stmt = update(Campaign).where(Campaign.id == campaign_id, Campaign.status == expected)
    if version is not None:
        stmt = stmt.where(Campaign.version == version)
    result = session.execute(
        stmt.values(
            status=target, updated_at=at, version=Campaign.version + 1, **values
        ).execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def campaigns_page(
    session: Session, *, province: str | None, status: str | None, offset: int, limit: int
) -> tuple[Sequence[Campaign], int]:
    stmt = select(Campaign)
    if province is not None:
        stmt = stmt.where(Campaign.province_code == province)
    if status is not None:
        stmt = stmt.where(Campaign.status == status)
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(stmt.order_by(Campaign.id.desc()).offset(offset).limit(limit)).all()
    return rows, total


def running_triggers(session: Session) -> Sequence[Campaign]:
    return session.scalars(
        select(Campaign)
        .where(Campaign.status == "running", Campaign.kind == "trigger")
        .order_by(Campaign.id)
    ).all()
