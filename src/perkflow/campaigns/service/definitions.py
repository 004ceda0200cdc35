"""Campaign use cases: definitions (parse, create, edit, submit, approve, reject)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.audience.marts import PROFILE
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.models import (
    Campaign,
)
from perkflow.campaigns.rules import (
    CampaignStatus,
)
from perkflow.catalog import service as catalog
from perkflow.coupons import service as coupons
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.ids import token
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

from .access import _require_staff, get_campaign

# ---- definitions ---------------------------------------------------------------------------------


def _invalid(exc: rules.InvalidSpec) -> ValidationFailed:
    errors = [{"path": p.path, "message": p.message} for p in exc.problems]
    first = exc.problems[0]
    more = len(exc.problems) - 1
    message = first.message + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
    return ValidationFailed(message, field=first.path or "spec", errors=errors)


def _profile_kinds(mart: Mart | None) -> dict[str, str] | None:
    if mart is None or not mart.has(PROFILE):
        return None
    return {name: spec.kind.value for name, spec in audience.profile_columns(mart).items()}


def parse_spec(
    session: Session, *, actor: Actor, mart: Mart | None, raw: Any
) -> rules.CampaignSpec:
    """A validated spec whose segment and offer exist and are visible; 422 naming the field."""
    try:
        spec = rules.parse_spec(raw, columns=_profile_kinds(mart))
    except rules.InvalidSpec as exc:
        raise _invalid(exc) from exc
    if spec.segment_id is not None:
        try:
            audience.get_segment(session, actor=actor, segment_id=spec.segment_id)
        except NotFound as exc:
            raise ValidationFailed(exc.message, field="segment_id") from exc
    offer = spec.offer
    name = offer.name
    try:
        if offer.kind == "coupon_batch" and offer.id is not None:
            batch = coupons.get_batch(session, actor=actor, batch_id=offer.id)
            name = name or batch.name_zh
        elif offer.kind == "benefit" and offer.id is not None:
            benefit = catalog.get_benefit(session, benefit_id=offer.id)
            name = name or benefit.name_zh
    except NotFound as exc:
        raise ValidationFailed(exc.message, field="offer.id") from exc
    if name != offer.name:
        spec = replace(spec, offer=replace(offer, name=name))
    return spec


def _audit(session: Session, actor: Actor, action: str, campaign: Campaign, **details: Any) -> None:
    org.record_audit(
        session,
        actor=actor,
        action=f"campaign.{action}",
        target_type="campaign",
        target_id=str(campaign.id),
        details=details,
    )


def create_campaign(session: Session, *, actor: Actor, mart: Mart | None, raw: Any) -> Campaign:
    """A new draft from a spec (a province marketer's is confined to their province)."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    spec = parse_spec(session, actor=actor, mart=mart, raw=raw)
    now = clock.now()
    campaign = Campaign(
        **rules.spec_columns(spec),
        status=CampaignStatus.DRAFT.value,
        province_code=org.visible_province(actor),
        salt=f"cmp-{token(9)}",
        created_by=actor.name,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(campaign)
    session.flush()  # the id goes into the audit entry
    _audit(session, actor, "create", campaign, name=spec.name, kind=spec.kind.value)
    return campaign


def update_campaign(
    session: Session, *, actor: Actor, mart: Mart | None, campaign_id: int, raw: Any, version: int
) -> Campaign:
    """Replace a draft's spec; 409 when someone saved it since `version` (or it left draft)."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    spec = parse_spec(session, actor=actor, mart=mart, raw=raw)
    moved = repo.move_campaign(
        session,
        campaign_id=campaign.id,
        expected=CampaignStatus.DRAFT.value,
        target=CampaignStatus.DRAFT.value,
        version=version,
        at=clock.now(),
        **rules.spec_columns(spec),
    )
    if not moved:
        raise Conflict(
            "the campaign changed meanwhile or is no longer a draft; reload it", field="version"
        )
    fresh = repo.get_fresh(session, campaign.id)
    assert fresh is not None
    _audit(session, actor, "update", fresh, version=fresh.version)
    return fresh


def _transition(
    session: Session,
    *,
    actor: Actor,
    campaign: Campaign,
    action: rules.Action,
    details: dict[str, Any] | None = None,
    **values: Any,
) -> Campaign:
    """Move a campaign along the lifecycle table by compare-and-set, audited."""
    target = rules.next_status(campaign.status, action)
    if target is None:
        raise Conflict(f"a {campaign.status} campaign cannot {action.value}", field="status")
    if not repo.move_campaign(
        session,
        campaign_id=campaign.id,
        expected=campaign.status,
        target=target.value,
        at=clock.now(),
        **values,
    ):
        raise Conflict("the campaign changed meanwhile; reload it", field="status")
    fresh = repo.get_fresh(session, campaign.id)
    assert fresh is not None
    _audit(
        session,
        actor,
        action.value,
        fresh,
        **{"from": campaign.status, "to": target.value, **(details or {})},
    )
    return fresh


def submit_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """Send a draft for approval."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.SUBMIT,
        submitted_by=actor.name,
    )


def approve_campaign(
    session: Session, *, actor: Actor, campaign_id: int, note: str = ""
) -> Campaign:
    """Approve a submitted campaign: a second person, never its author or submitter."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    if actor.kind != "system" and actor.name in (campaign.created_by, campaign.submitted_by):
        raise Forbidden("a campaign is approved by a second person, not its author or submitter")
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.APPROVE,
        details={"note": note.strip()[:500]},
        approved_by=actor.name,
        approved_at=clock.now(),
    )


def reject_campaign(session: Session, *, actor: Actor, campaign_id: int, note: str) -> Campaign:
    """Send a submitted campaign back to draft with the reason."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    note = note.strip()
    if not note:
        raise ValidationFailed("say why the campaign is sent back", field="note")
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.REJECT,
        details={"note": note[:500]},
        submitted_by=None,
    )
