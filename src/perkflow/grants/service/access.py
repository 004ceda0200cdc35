"""Grants use cases: who may do what."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import Forbidden, NotFound
from perkflow.grants.models import Grant
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers

# --- who may do what ------------------------------------------------------------------------------


def _require_issue(actor: Actor) -> None:
    if actor.kind == "subscriber":
        raise Forbidden("subscribers claim benefits through the H5 pages")
    if actor.kind in ("staff", "api_key"):
        org.require_perm_or_scope(actor, perm=Perm.GRANTS_ISSUE, scope="grants:write")


def _require_read(actor: Actor) -> None:
    if actor.kind in ("staff", "api_key"):
        org.require_perm_or_scope(
            actor, perm=Perm.GRANTS_READ, scope=("grants:read", "grants:write")
        )


def require_read(actor: Actor) -> None:
    """403 unless the actor may read grants."""
    _require_read(actor)


def _partner_may_see(session: Session, *, actor: Actor, partner_id: int) -> bool:
    """A partner's key sees only its own partner's benefits and grants."""
    if not _is_partner_key(actor):
        return True
    # A partner key that names no partner sees nothing.
    return (
        actor.owner_ref is not None
        and catalog.get_partner(session, partner_id=partner_id).code == actor.owner_ref
    )


def _is_partner_key(actor: Actor) -> bool:
    return actor.kind == "api_key" and (
        actor.owner_kind == "partner" or actor.owner_ref is not None
    )


def _require_visible(session: Session, *, actor: Actor, grant: Grant) -> None:
    _require_read(actor)
    if actor.kind == "staff":
        subscribers.require_in_scope(session, actor=actor, subscriber_id=grant.subscriber_id)
    elif actor.kind == "subscriber" and actor.id != str(grant.subscriber_id):
        raise NotFound(f"no grant {grant.id}", field="grant_id")
    if not _partner_may_see(session, actor=actor, partner_id=grant.partner_id):
        raise NotFound(f"no grant {grant.id}", field="grant_id")


def _partner_actor(partner: Any) -> Actor:
    return Actor(kind="partner", id=str(partner.code), name=str(partner.name))
