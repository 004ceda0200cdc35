"""Grants use cases: the console home."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from perkflow.grants.models import Grant, OutboxMessage
from perkflow.grants.rules import (
    GrantStatus,
    OutboxStatus,
)
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers

# --- the console home -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantActivity:
    """Grants issued today and this month (with each day of the month), and failed deliveries."""

    today: int
    month: int
    days: list[str]
    per_day: list[int]
    failed_month: int
    dead_letters: int


def grant_activity(session: Session, *, actor: Actor, zone: str) -> GrantActivity:
    """Grants per operator-local day this month and delivery failures, in the actor's region."""
    import itertools

    from sqlalchemy import and_, case, func, select

    org.require(actor, Perm.DASHBOARD)
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    first = today.replace(day=1)
    dates = [first + timedelta(days=i) for i in range((today - first).days + 1)]
    edges = [datetime.combine(d, datetime.min.time(), tzinfo=tz) for d in dates]
    edges.append(edges[-1] + timedelta(days=1))
    # One scan of the month's grants with a sum per day: the same SQL on SQLite and PostgreSQL.
    days = [
        func.coalesce(
            func.sum(case((and_(Grant.created_at >= lo, Grant.created_at < hi), 1), else_=0)),
            0,
        )
        for lo, hi in itertools.pairwise(edges)
    ]
    failed = func.coalesce(
        func.sum(case((Grant.status == GrantStatus.FAILED.value, 1), else_=0)), 0
    )
    stmt = select(*days, failed).where(Grant.created_at >= edges[0], Grant.created_at < edges[-1])
    dead = (
        select(func.count())
        .select_from(OutboxMessage)
        .join(Grant, Grant.id == OutboxMessage.grant_id)
        .where(OutboxMessage.status == OutboxStatus.DEAD.value)
    )
    province = org.visible_province(actor)
    if province is not None:
        members = subscribers.ids_in_province(province=province)
        stmt = stmt.where(Grant.subscriber_id.in_(members))
        dead = dead.where(Grant.subscriber_id.in_(members))
    row = session.execute(stmt).one()
    per_day = [int(n) for n in row[:-1]]
    return GrantActivity(
        today=per_day[-1],
        month=sum(per_day),
        days=[d.isoformat() for d in dates],
        per_day=per_day,
        failed_month=int(row[-1]),
        dead_letters=int(session.scalar(dead) or 0),
    )
