"""Grants use cases: reading."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant, GrantEvent
from perkflow.grants.rules import (
    GrantStatus,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import normalize_phone

from .access import _is_partner_key, _require_read, _require_visible

# --- reading --------------------------------------------------------------------------------------


def get_grant(session: Session, *, actor: Actor, grant_id: int) -> Grant:
    """One grant the actor may see, or 404."""
    _require_read(actor)
    grant = repo.get(session, grant_id)
    if grant is None:
        raise NotFound(f"no grant {grant_id}", field="grant_id")
    _require_visible(session, actor=actor, grant=grant)
    return grant


def grant_history(session: Session, *, actor: Actor, grant_id: int) -> Sequence[GrantEvent]:
    """Every step of one grant, oldest first."""
    get_grant(session, actor=actor, grant_id=grant_id)
    return repo.events(session, [grant_id])


def list_grants(
    session: Session, *, actor: Actor, subscriber_id: int, offset: int = 0, limit: int = 50
) -> tuple[Sequence[Grant], int]:
    """A subscriber's grants, newest first, as far as the actor may see them."""
    _require_read(actor)
    if actor.kind == "staff":
        subscribers.require_in_scope(session, actor=actor, subscriber_id=subscriber_id)
    elif actor.kind == "subscriber" and actor.id != str(subscriber_id):
        raise Forbidden("a subscriber sees only their own grants")
    partner_id = None
    if _is_partner_key(actor):
        partner_id = _own_partner_id(session, actor=actor, subscriber_id=subscriber_id)
        if partner_id is None:
            return [], 0
    return repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=partner_id, offset=offset, limit=limit
    )


def _own_partner_id(session: Session, *, actor: Actor, subscriber_id: int) -> int | None:
    rows, _ = repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=None, offset=0, limit=10_000
    )
    for partner_id in sorted({g.partner_id for g in rows}):
        if catalog.get_partner(session, partner_id=partner_id).code == actor.owner_ref:
            return partner_id
    return None


@dataclass(frozen=True)
class GrantRow:
    """A grant with what a person needs beside it: benefit names, kind, history."""

    grant: Grant
    benefit_code: str
    name_zh: str
    name_en: str
    kind: str
    events: list[GrantEvent] = field(default_factory=list)

    @property
    def can_reveal(self) -> bool:
        return self.grant.card_code_id is not None and self.grant.status in ("fulfilled", "used")


def _rows(session: Session, grants: Sequence[Grant], *, with_events: bool) -> list[GrantRow]:
    history: dict[int, list[GrantEvent]] = {}
    if with_events:
        for e in repo.events(session, [g.id for g in grants]):
            history.setdefault(e.grant_id, []).append(e)
    out = []
    for g in grants:
        b = catalog.get_benefit(session, benefit_id=g.benefit_id)
        out.append(
            GrantRow(
                grant=g,
                benefit_code=b.code,
                name_zh=b.name_zh,
                name_en=b.name_en,
                kind=b.fulfilment_kind,
                events=history.get(g.id, []),
            )
        )
    return out


def my_grants(session: Session, *, subscriber_id: int, limit: int = 100) -> list[GrantRow]:
    """What a signed-in subscriber sees in "my benefits"."""
    rows, _ = repo.of_subscriber(
        session, subscriber_id=subscriber_id, partner_id=None, offset=0, limit=limit
    )
    return _rows(session, rows, with_events=False)


def search_by_phone(
    session: Session, *, actor: Actor, vault: Vault, phone: str, limit: int = 200
) -> tuple[subscribers.SubscriberView, list[GrantRow]]:
    """A subscriber found by phone number (shown masked) with their grants and histories."""
    org.require(actor, Perm.GRANTS_READ)
    sub = subscribers.find_by_phone(session, vault=vault, phone=phone)
    if sub is None:
        if normalize_phone(phone) is None:
            raise ValidationFailed("phone must be an 11-digit mobile number", field="phone")
        raise NotFound("no subscriber with this phone number", field="phone")
    view = subscribers.get_subscriber(session, actor=actor, vault=vault, subscriber_id=sub.id)
    rows, _ = repo.of_subscriber(
        session, subscriber_id=sub.id, partner_id=None, offset=0, limit=limit
    )
    return view, _rows(session, rows, with_events=True)


def reveal_card_code(
    session: Session, *, actor: Actor, vault: Vault, grant_id: int
) -> tuple[str, str | None]:
    """The clear card code and PIN of a grant, for its own subscriber only; audited."""
    grant = repo.get(session, grant_id)
    if actor.kind != "subscriber" or grant is None or actor.id != str(grant.subscriber_id):
        raise NotFound(f"no grant {grant_id}", field="grant_id")
    if grant.card_code_id is None:
        raise Conflict("this benefit has no card code", field="grant_id")
    if grant.status not in (GrantStatus.FULFILLED.value, GrantStatus.USED.value):
        raise Conflict(f"this benefit is {grant.status}", field="grant_id")
    code, pin = catalog.reveal_code(session, vault=vault, code_id=grant.card_code_id)
    org.record_audit(
        session,
        actor=actor,
        action="grant.reveal_code",
        target_type="grant",
        target_id=str(grant.id),
        details={"card_code_id": grant.card_code_id},
    )
    return code, pin


def grants_per_day(
    session: Session, *, actor: Actor, benefit_id: int, days: int, zone: str
) -> dict[str, Any]:
    """Grants of one benefit per operator-local day, as a bar chart spec."""
    _require_read(actor)
    catalog.get_benefit(session, benefit_id=benefit_id)
    if not 1 <= days <= 366:
        raise ValidationFailed("days must be between 1 and 366", field="days")
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    per_day = Counter(
        clock.as_utc(t).astimezone(tz).date()
        for t in repo.created_times(session, benefit_id=benefit_id, since=since)
    )
    dates = [first + timedelta(days=i) for i in range(days)]
    return {
        "kind": "bar",
        "categories": [d.isoformat() for d in dates],
        "series": [{"name": "grants", "data": [per_day.get(d, 0) for d in dates]}],
    }
