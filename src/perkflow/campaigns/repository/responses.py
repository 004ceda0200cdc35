"""Lookups for responses and events: a subscriber's contacts, a response or an event by key."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact, CampaignResponse, SubscriberEvent
from perkflow.campaigns.rules import EVALUATED, NOT_ASSIGNED_REASONS, ContactStatus

from ._sql import _CONTACTS


def contact_id_of(session: Session, *, campaign_id: int, subscriber_id: int) -> int | None:
    """The contact id of one subscriber in one campaign (the unique pair's index)."""
    c = _CONTACTS.c
    found = session.connection().execute(
        select(c.id).where(c.campaign_id == campaign_id, c.subscriber_id == subscriber_id)
    )
    return found.scalar_one_or_none()


def contacts_of_subscriber(session: Session, *, subscriber_id: int) -> Sequence[CampaignContact]:
    return session.scalars(
        select(CampaignContact)
        .where(
            CampaignContact.subscriber_id == subscriber_id,
            CampaignContact.contacted_at.is_not(None),
            or_(
                CampaignContact.status.in_([s.value for s in EVALUATED]),
                # Assigned but dropped at send time: still in its cell (intent to treat).
                and_(
                    CampaignContact.status == ContactStatus.SUPPRESSED.value,
                    CampaignContact.reason.not_in(sorted(NOT_ASSIGNED_REASONS)),
                ),
            ),
        )
        .order_by(CampaignContact.contacted_at.desc(), CampaignContact.id.desc())
    ).all()


def response_by_key(session: Session, key: str) -> CampaignResponse | None:
    return session.scalar(select(CampaignResponse).where(CampaignResponse.idempotency_key == key))


def event_by_key(session: Session, key: str) -> SubscriberEvent | None:
    return session.scalar(select(SubscriberEvent).where(SubscriberEvent.idempotency_key == key))
