"""What the catalog's use cases share: the default zone, refusals, read access."""

from __future__ import annotations

from sqlalchemy.orm import Session

from perkflow.catalog import repository as repo
from perkflow.catalog import rules
from perkflow.errors import ValidationFailed
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

DEFAULT_ZONE = "Asia/Shanghai"


def _refuse(issue: rules.Issue | None) -> None:
    if issue is not None:
        field, reason = issue
        raise ValidationFailed(f"{field}: {reason}", field=field)


def _require_read(actor: Actor) -> None:
    """Staff need catalog.read; an API key needs the catalog:read scope."""
    org.require_perm_or_scope(actor, perm=Perm.CATALOG_READ, scope="catalog:read")


def _partner_limit(session: Session, actor: Actor) -> int | None:
    """The one partner a partner's API key is limited to, or None for the whole catalog."""
    if actor.kind != "api_key" or actor.owner_kind != "partner":
        return None
    partner = repo.get_partner_by_code(session, actor.owner_ref) if actor.owner_ref else None
    # 0 is no partner's id: a partner key that names no known partner sees nothing.
    return partner.id if partner is not None else 0


def _text(value: str, *, field: str, required: bool = True) -> str:
    cleaned = value.strip()
    if required and not cleaned:
        raise ValidationFailed(f"{field}: cannot be empty", field=field)
    return cleaned
