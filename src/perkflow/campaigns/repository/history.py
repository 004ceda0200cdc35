"""Imported histories: rows inserted in bulk, contact ids by subscriber, what an import holds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact, CampaignResponse

_CHUNK = 5_000


def insert_rows(session: Session, model: Any, rows: Iterable[dict[str, Any]]) -> int:
    """Bulk-insert plain rows through Core in chunks; returns how many."""
    n = 0
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _CHUNK:
            session.execute(insert(model), chunk)
            n += len(chunk)
            chunk = []
    if chunk:
        session.execute(insert(model), chunk)
        n += len(chunk)
    return n


def contact_ids(session: Session, *, campaign_id: int) -> dict[int, int]:
    """subscriber id → contact id of every contact of a campaign."""
    stmt = select(CampaignContact.subscriber_id, CampaignContact.id).where(
        CampaignContact.campaign_id == campaign_id
    )
    return {int(s): int(i) for s, i in session.execute(stmt)}


def import_counts(
    session: Session, *, campaign_id: int
) -> tuple[int, int, datetime | None, datetime | None]:
    """(contacts, those matched to our subscribers, first and last contact) of a campaign."""
    c = CampaignContact
    row = session.execute(
        select(
            func.count(),
            func.count(c.id).filter(c.import_source.is_(None)),
            func.min(c.contacted_at),
            func.max(c.contacted_at),
        ).where(c.campaign_id == campaign_id)
    ).one()
    return int(row[0]), int(row[1]), row[2], row[3]


def response_totals(session: Session, *, campaign_id: int) -> tuple[int, int]:
    """(responses, revenue in fen) recorded for a campaign."""
    r = CampaignResponse
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(r.value_fen), 0)).where(
            r.campaign_id == campaign_id
        )
    ).one()
    return int(row[0]), int(row[1])
