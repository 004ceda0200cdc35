"""Reads for insights: evaluation counts and waves, the mart history sync's pages, offers.

Kept apart from the campaign engine's queries; owned by the insights capability.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from perkflow.campaigns.models import Campaign, CampaignContact, CampaignResponse, CampaignWave
from perkflow.campaigns.rules import (
    NOT_ASSIGNED_REASONS,
    TREATED,
    CellCount,
    ContactStatus,
    ResponseTime,
)


def _assigned() -> ColumnElement[bool]:
    """The rows an evaluation counts (intent to treat): all but those no variant matched.

    A target dropped at send time stays in its cell; only ``NOT_ASSIGNED_REASONS`` leave it. The
    one rule for the ledger's cell counts and the mart's history export alike.
    """
    c = CampaignContact
    return or_(
        c.status != ContactStatus.SUPPRESSED.value,
        c.reason.is_(None),
        c.reason.not_in(sorted(NOT_ASSIGNED_REASONS)),
    )


def cell_counts(
    session: Session, *, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[CellCount]:
    """Per (cell, variant, province): assigned contacts, distinct responders, revenue, spenders.

    Intent to treat: every assigned row counts, suppressed at send time or not; beside them the
    rows whose message went out (treated), for a treated-on-treated comparison.
    """
    per_contact = (
        select(
            CampaignResponse.contact_id.label("contact_id"),
            func.sum(CampaignResponse.value_fen).label("value"),
        )
        .where(CampaignResponse.campaign_id == campaign_id)
        .group_by(CampaignResponse.contact_id)
        .subquery()
    )
    c = CampaignContact
    treated = c.status.in_([s.value for s in TREATED])
    value = func.coalesce(per_contact.c.value, 0)
    stmt = (
        select(
            c.cell,
            c.variant,
            c.province_code,
            func.count(),
            func.count(per_contact.c.contact_id),
            func.coalesce(func.sum(per_contact.c.value), 0),
            func.sum(case((treated, 1), else_=0)),
            func.sum(case((treated & per_contact.c.contact_id.is_not(None), 1), else_=0)),
            func.sum(case((treated, value), else_=0)),
            # Per contact first (its responses summed), then counted and squared: what the
            # revenue interval reads (insights.stats.revenue).
            func.sum(case((value > 0, 1), else_=0)),
            func.sum(value * value),
            func.sum(case((treated & (value > 0), 1), else_=0)),
            func.sum(case((treated, value * value), else_=0)),
        )
        .outerjoin(per_contact, per_contact.c.contact_id == c.id)
        .where(
            c.campaign_id == campaign_id,
            _assigned(),
        )
        .group_by(c.cell, c.variant, c.province_code)
    )
    if wave_ids is not None:
        stmt = stmt.where(c.wave_id.in_(list(wave_ids)))
    return [
        CellCount(
            cell=cell,
            variant=variant,
            province_code=province,
            contacts=int(n),
            responders=int(r),
            revenue_fen=int(v),
            treated=int(tn or 0),
            treated_responders=int(tr or 0),
            treated_revenue_fen=int(tv or 0),
            spenders=int(sn or 0),
            revenue_sq_fen2=int(sq or 0),
            treated_spenders=int(tsn or 0),
            treated_revenue_sq_fen2=int(tsq or 0),
        )
        for cell, variant, province, n, r, v, tn, tr, tv, sn, sq, tsn, tsq in session.execute(stmt)
    ]


def first_responses(
    session: Session, *, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[ResponseTime]:
    """The first response of every responding contact, oldest first."""
    r = CampaignResponse
    stmt = (
        select(r.cell, r.variant, func.min(r.responded_at))
        .join(CampaignContact, CampaignContact.id == r.contact_id)
        .where(r.campaign_id == campaign_id)
        .group_by(r.contact_id, r.cell, r.variant)
        .order_by(func.min(r.responded_at))
    )
    if wave_ids is not None:
        stmt = stmt.where(CampaignContact.wave_id.in_(list(wave_ids)))
    return [
        ResponseTime(cell=cell, variant=variant, responded_at=at)
        for cell, variant, at in session.execute(stmt)
    ]


def wave_ids_of(session: Session, *, campaign_id: int, kind: str) -> list[int]:
    """Ids of a campaign's waves of one kind (test, rollout, ...)."""
    stmt = select(CampaignWave.id).where(
        CampaignWave.campaign_id == campaign_id, CampaignWave.kind == kind
    )
    return [int(i) for i in session.scalars(stmt)]


class HistoryContact(NamedTuple):
    """One assigned contact of a campaign, as the mart's history holds it."""

    id: int
    campaign_id: int
    subscriber_id: int
    channel: str
    cell: str
    contacted_at: datetime
    target_list_id: int | None
    variant: str | None  # the variant sent, or (control) the one it would have been sent
    wave_id: int | None
    status: str  # ContactStatus: sent/delivered are treated, suppressed was dropped at send time
    reason: str | None  # why it was suppressed


# (id, campaign, subscriber, channel of the contact, kind, responded_at, value) of one response.
HistoryResponse = tuple[int, int, int, str, str, datetime, int]


def contacts_after(session: Session, *, after_id: int, limit: int) -> list[HistoryContact]:
    """The assigned contacts of every campaign whose time is set, keyset-paged by contact id.

    The rows the evaluation counts (``_assigned``: intent to treat, so a target suppressed at
    send time is here with its status and reason), once they have a time: sent, held back, failed
    or dropped at send time; a row still queued comes with a later sync.
    """
    c = CampaignContact
    stmt = (
        select(
            c.id,
            c.campaign_id,
            c.subscriber_id,
            c.channel,
            c.cell,
            c.contacted_at,
            Campaign.target_list_id,
            c.variant,
            c.wave_id,
            c.status,
            c.reason,
        )
        .join(Campaign, Campaign.id == c.campaign_id)
        .where(
            c.id > after_id,
            c.contacted_at.is_not(None),
            _assigned(),
            # An outside source's unmatched ids are not our subscribers: the mart never sees them.
            c.import_source.is_(None),
        )
        .order_by(c.id)
        .limit(limit)
    )
    return [
        HistoryContact(int(i), int(cid), int(sid), ch, cell, at, tl, variant, wave, status, reason)
        for i, cid, sid, ch, cell, at, tl, variant, wave, status, reason in session.execute(stmt)
        if at is not None
    ]


def responses_after(session: Session, *, after_id: int, limit: int) -> list[HistoryResponse]:
    """Responses (id, campaign, subscriber, the contact's channel, kind, time, value) by id."""
    r = CampaignResponse
    stmt = (
        select(
            r.id,
            r.campaign_id,
            r.subscriber_id,
            CampaignContact.channel,
            r.kind,
            r.responded_at,
            r.value_fen,
        )
        .join(CampaignContact, CampaignContact.id == r.contact_id)
        .where(r.id > after_id, r.import_source.is_(None))
        .order_by(r.id)
        .limit(limit)
    )
    return [
        (int(i), int(cid), int(sid), ch, kind, at, int(v or 0))
        for i, cid, sid, ch, kind, at, v in session.execute(stmt)
    ]


def offers_by_campaign(session: Session) -> dict[int, dict[str, Any]]:
    """campaign id → its offer (kind, category, cost)."""
    return {int(i): dict(o or {}) for i, o in session.execute(select(Campaign.id, Campaign.offer))}
