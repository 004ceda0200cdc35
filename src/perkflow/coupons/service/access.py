"""Who may manage coupon batches and red-envelope programmes: owner regions, edit rights, scopes."""

from __future__ import annotations

from sqlalchemy.orm import Session

from perkflow.errors import (
    Forbidden,
    ValidationFailed,
)
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm, province_of


def _require_api_scope(actor: Actor, scope: str) -> None:
    if actor.kind == "api_key" and not actor.has_scope(scope):
        raise Forbidden(f"this key lacks the {scope} scope")


def owner_for(session: Session, *, actor: Actor, requested: str | None) -> str:
    """The owner region of a batch or programme: CN or a province the actor's scope covers."""
    mine = province_of(actor.scope_path) if actor.kind != "system" else None
    owner = requested or mine or "CN"
    region = org.require_region(session, actor=actor, region_code=owner)
    if region.level not in ("group", "province"):
        raise ValidationFailed("the owner is the group (CN) or a province", field="owner_region")
    return region.code


def _can_edit(actor: Actor, owner_region: str) -> bool:
    limited = org.visible_province(actor)
    return actor.can(Perm.COUPONS_EDIT) and (limited is None or limited == owner_region)


def require_edit(actor: Actor, owner_region: str) -> None:
    """403 unless the actor manages coupons (and red envelopes) owned by this region."""
    org.require(actor, Perm.COUPONS_EDIT)
    if not _can_edit(actor, owner_region):
        raise Forbidden("this batch belongs to another region")
