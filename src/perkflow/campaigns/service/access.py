"""Campaign use cases: who may read and change campaigns, and the one campaign lookup they share."""

from __future__ import annotations

from sqlalchemy.orm import Session

from perkflow.campaigns.models import (
    Campaign,
)
from perkflow.errors import Forbidden, NotFound
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

MAX_NAME = 120


def _require_read(actor: Actor) -> None:
    org.require_perm_or_scope(actor, perm=Perm.CAMPAIGNS_READ, scope="campaigns:read")


def _require_staff(actor: Actor, perm: Perm) -> None:
    """Campaign writes are by people or the system; API keys read, post events and responses."""
    if actor.kind == "api_key":
        raise Forbidden("campaigns are changed by staff, not by API keys")
    org.require(actor, perm)


def _visible(campaign: Campaign, actor: Actor) -> bool:
    province = org.visible_province(actor)
    return province is None or campaign.province_code == province


def get_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """A campaign the actor may see."""
    _require_read(actor)
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}", field="campaign_id")
    if not _visible(campaign, actor):
        raise Forbidden("this campaign belongs to another province")
    return campaign
