"""Waves: reads, the status compare-and-set, and what a wave's contacts add up to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact, CampaignWave
from perkflow.campaigns.rules import ContactStatus

from ._sql import _CONTACTS, _rowcount


def waves_of(session: Session, campaign_id: int) -> Sequence[CampaignWave]:
    return session.scalars(
        select(CampaignWave)
        .where(CampaignWave.campaign_id == campaign_id)
        .order_by(CampaignWave.id)
        .execution_options(populate_existing=True)
    ).all()


def wave_of_kind(session: Session, campaign_id: int, kind: str) -> CampaignWave | None:
    return session.scalar(
        select(CampaignWave)
        .where(CampaignWave.campaign_id == campaign_id, CampaignWave.kind == kind)
        .execution_options(populate_existing=True)
    )


def waves_in(
    session: Session, status: str, *, campaign_id: int | None = None
) -> Sequence[CampaignWave]:
    stmt = select(CampaignWave).where(CampaignWave.status == status)
    if campaign_id is not None:
        stmt = stmt.where(CampaignWave.campaign_id == campaign_id)
    return session.scalars(stmt.order_by(CampaignWave.id)).all()


def move_wave(session: Session, *, wave_id: int, expected: str, target: str, **values: Any) -> bool:
    result = session.execute(
        update(CampaignWave)
        .where(CampaignWave.id == wave_id, CampaignWave.status == expected)
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(_rowcount(result))


def count_by_status(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.status, func.count())
        .where(CampaignContact.wave_id == wave_id)
        .group_by(CampaignContact.status)
    )
    return {str(s): int(n) for s, n in rows}


def sent_by_channel(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.channel, func.count())
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status.in_([ContactStatus.SENT.value, ContactStatus.DELIVERED.value]),
        )
        .group_by(CampaignContact.channel)
    )
    return {str(c): int(n) for c, n in rows}


def reasons_of(session: Session, *, wave_id: int) -> dict[str, int]:
    rows = session.execute(
        select(CampaignContact.reason, func.count())
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status == ContactStatus.SUPPRESSED.value,
        )
        .group_by(CampaignContact.reason)
    )
    return {str(r): int(n) for r, n in rows}


def recent_failures(session: Session, *, wave_id: int, limit: int) -> Sequence[CampaignContact]:
    return session.scalars(
        select(CampaignContact)
        .where(
            CampaignContact.wave_id == wave_id,
            CampaignContact.status == ContactStatus.FAILED.value,
        )
        .order_by(CampaignContact.id.desc())
        .limit(limit)
    ).all()


def has_open(session: Session, *, wave_id: int) -> bool:
    """Whether a contact of the wave is still queued or sending."""
    # One index probe per status, not a count: the worker asks every round, and counting the
    # open rows of a 1M wave each round made the loop quadratic.
    c = _CONTACTS.c
    for status in (ContactStatus.SENDING.value, ContactStatus.QUEUED.value):
        stmt = select(c.id).where(c.wave_id == wave_id, c.status == status).limit(1)
        if session.connection().execute(stmt).first() is not None:
            return True
    return False


def next_due_at(session: Session, *, wave_ids: Sequence[int]) -> datetime | None:
    """When the next open contact of these waves is due: a queued one's time, a lease's end."""
    c = CampaignContact
    in_waves = c.wave_id.in_(list(wave_ids))
    now_due = session.scalar(
        select(c.id)
        .where(in_waves, c.status == ContactStatus.QUEUED.value, c.next_attempt_at.is_(None))
        .limit(1)
    )
    if now_due is not None:
        return datetime.min.replace(tzinfo=UTC)
    queued = session.scalar(
        select(func.min(c.next_attempt_at)).where(in_waves, c.status == ContactStatus.QUEUED.value)
    )
    leased = session.scalar(
        select(func.min(c.lease_until)).where(in_waves, c.status == ContactStatus.SENDING.value)
    )
    times = [t for t in (queued, leased) if t is not None]
    return min(times) if times else None


def totals(session: Session, *, wave_ids: Sequence[int]) -> tuple[int, int]:
    """(contacts, open contacts) of these waves."""
    c = CampaignContact
    rows = session.execute(
        select(c.status, func.count()).where(c.wave_id.in_(list(wave_ids))).group_by(c.status)
    )
    counts = {str(s): int(n) for s, n in rows}
    open_ = counts.get(ContactStatus.QUEUED.value, 0) + counts.get(ContactStatus.SENDING.value, 0)
    return sum(counts.values()), open_
