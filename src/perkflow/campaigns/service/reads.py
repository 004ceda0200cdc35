"""Campaign use cases: reads for evaluation and for insights (waves, contacts, offers)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from perkflow.campaigns import repository as repo
from perkflow.campaigns.rules import (
    CellCount,
    ResponseTime,
)
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from .access import get_campaign

# ---- reads for evaluation ---------------------------------------------------------------------


def contact_counts(
    session: Session, *, actor: Actor, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[CellCount]:
    """Evaluated contacts, responders and revenue per (cell, variant, province) of a campaign."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.cell_counts(session, campaign_id=campaign_id, wave_ids=wave_ids)


def response_times(
    session: Session, *, actor: Actor, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[ResponseTime]:
    """The first response time of every responding contact (for cumulative charts)."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.first_responses(session, campaign_id=campaign_id, wave_ids=wave_ids)


# ---- reads for insights (evaluation waves, mart history sync) -------------------------------
# Kept apart from the campaign engine above; owned by the insights capability.


def wave_ids(session: Session, *, actor: Actor, campaign_id: int, kind: str) -> list[int]:
    """Ids of a campaign's waves of one kind (``test``, ``rollout``...)."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.wave_ids_of(session, campaign_id=campaign_id, kind=kind)


def history_contacts(
    session: Session, *, actor: Actor, after_id: int = 0, limit: int = 50_000
) -> list[repo.HistoryContact]:
    """Assigned contacts of every campaign after a contact id (intent to treat), for the mart."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.contacts_after(session, after_id=after_id, limit=limit)


def history_responses(
    session: Session, *, actor: Actor, after_id: int = 0, limit: int = 50_000
) -> list[repo.HistoryResponse]:
    """Responses of every campaign after a response id, for the mart."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.responses_after(session, after_id=after_id, limit=limit)


def offers(session: Session, *, actor: Actor) -> dict[int, dict[str, object]]:
    """Every campaign's offer (kind, category, cost_fen) by campaign id."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.offers_by_campaign(session)
