"""Campaign use cases: responses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.models import (
    Campaign,
    CampaignContact,
    CampaignResponse,
)
from perkflow.coupons import service as coupons
from perkflow.errors import ValidationFailed
from perkflow.grants import service as grants
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm

# ---- responses -----------------------------------------------------------------------------------


def _require_writer(actor: Actor, *, scope: str, perm: Perm) -> None:
    org.require_perm_or_scope(actor, perm=perm, scope=scope)


def _goal_matches(campaign: Campaign, kind: str, ref: str | None) -> bool:
    goal = campaign.goal or {}
    if goal.get("kind") not in (kind, "any"):
        return False
    offer = campaign.offer or {}
    # A ledger response names what was claimed or used; it counts for the campaign of that offer.
    if ref is not None and offer.get("kind") not in (None, "none") and kind != "order":
        return ref == f"{offer.get('kind')}:{offer.get('id')}"
    return True


def record_response(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    kind: str,
    occurred_at: datetime,
    value_fen: int = 0,
    idempotency_key: str,
    source: str,
    ref: str | None = None,
) -> CampaignResponse | None:
    """Attribute what a subscriber did to their last eligible contact whose window covers it.

    Control-cell (held) contacts count like sent ones. A key seen before returns the first
    record; None when no contact of a campaign with this goal covers the time.
    """
    _require_writer(actor, scope="responses:write", perm=Perm.RESPONSES_WRITE)
    response, _ = _attribute(
        session,
        subscriber_id=subscriber_id,
        kind=kind,
        occurred_at=occurred_at,
        value_fen=value_fen,
        idempotency_key=idempotency_key,
        source=source,
        ref=ref,
    )
    return response


def _attribute(
    session: Session,
    *,
    subscriber_id: int,
    kind: str,
    occurred_at: datetime,
    value_fen: int,
    idempotency_key: str,
    source: str,
    ref: str | None,
) -> tuple[CampaignResponse | None, bool]:
    """The response recorded for the key, and whether this call recorded it."""
    if kind not in rules.RESPONSE_KINDS:
        raise ValidationFailed(f"kind is one of {', '.join(rules.RESPONSE_KINDS)}", field="kind")
    key = idempotency_key.strip()
    if not key or len(key) > 160:
        raise ValidationFailed("an idempotency key of 1 to 160 characters", field="idempotency_key")
    if occurred_at.tzinfo is None:
        raise ValidationFailed("occurred_at needs a time zone", field="occurred_at")
    if isinstance(value_fen, bool) or not 0 <= value_fen <= 10**12:
        raise ValidationFailed("value_fen is whole fen ≥ 0", field="value_fen")
    existing = repo.response_by_key(session, key)
    if existing is not None:
        return existing, False
    at = occurred_at.astimezone(UTC)
    campaigns: dict[int, Campaign | None] = {}
    chosen: CampaignContact | None = None
    for contact in repo.contacts_of_subscriber(session, subscriber_id=subscriber_id):
        assert contact.contacted_at is not None
        if contact.contacted_at > at:
            continue
        if contact.campaign_id not in campaigns:
            campaigns[contact.campaign_id] = session.get(Campaign, contact.campaign_id)
        campaign = campaigns[contact.campaign_id]
        if campaign is None or not _goal_matches(campaign, kind, ref):
            continue
        window = timedelta(days=int((campaign.goal or {}).get("window_days", 0)))
        if at <= contact.contacted_at + window:
            chosen = contact  # rows come newest first: the last eligible contact
            break
    if chosen is None:
        return None, False
    response = CampaignResponse(
        campaign_id=chosen.campaign_id,
        contact_id=chosen.id,
        subscriber_id=subscriber_id,
        cell=chosen.cell,
        variant=chosen.variant,
        kind=kind,
        value_fen=value_fen,
        responded_at=at,
        source=source[:32],
        idempotency_key=key,
    )
    try:
        # A savepoint: the unique key decides a concurrent duplicate, not the read above.
        with session.begin_nested():
            session.add(response)
    except IntegrityError:
        return repo.response_by_key(session, key), False
    return response, True


@dataclass(frozen=True)
class LedgerResponses:
    """What one pass over the ledger recorded, and where the next pass starts."""

    seen: int
    recorded: int  # added by this pass: a fact an earlier pass recorded is only seen again
    cursor: dict[str, int]


LEDGER_REWIND_IDS = 1_000


def collect_ledger_responses(
    session: Session,
    *,
    actor: Actor,
    since: dict[str, int] | None = None,
    limit: int = 5_000,
) -> LedgerResponses:
    """Claims, redemptions and grant uses after the cursor, recorded as responses (idempotent)."""
    _require_writer(actor, scope="responses:write", perm=Perm.RESPONSES_WRITE)
    cursor = dict(since or {})
    seen = recorded = 0
    # Concurrent writers commit out of id order (a claim group may commit after a later id was
    # read), so each pass reads again a window behind the cursor; recording is idempotent by
    # row, so a row read twice counts once and a late row is not lost.
    rewind = min(LEDGER_REWIND_IDS, limit // 2)

    def after(kind: str) -> int:
        return max(0, cursor.get(kind, 0) - rewind)

    sources: list[tuple[str, Sequence[Any]]] = [
        ("claim", coupons.claims_since(session, after_id=after("claim"), limit=limit)),
        (
            "redemption",
            coupons.redemptions_since(session, after_id=after("redemption"), limit=limit),
        ),
        ("grant_use", grants.uses_since(session, after_id=after("grant_use"), limit=limit)),
    ]
    for kind, rows in sources:
        for row in rows:
            seen += 1
            _, added = _attribute(
                session,
                subscriber_id=row.subscriber_id,
                kind=kind,
                occurred_at=row.at,
                value_fen=row.value_fen,
                idempotency_key=f"ledger:{kind}:{row.id}",
                source="ledger",
                ref=row.ref,
            )
            recorded += added
            cursor[kind] = max(cursor.get(kind, 0), row.id)
    return LedgerResponses(seen=seen, recorded=recorded, cursor=cursor)
