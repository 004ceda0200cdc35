"""Grants use cases: issuing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import rules as catalog_rules
from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus, FulfilmentKind, ValidityKind
from perkflow.errors import Conflict, NotFound, ValidationFailed
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant
from perkflow.grants.rules import (
    GrantStatus,
    OutboxKind,
    month_period,
)
from perkflow.kit import clock, metrics
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import Actor
from perkflow.org.rules import subscriber_actor as subscriber_actor
from perkflow.subscribers import service as subscribers

from .access import _partner_may_see, _require_issue, _require_visible
from .steps import _count, _event

# --- issuing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A grant and whether this request created it or replayed an earlier one with its key."""

    grant: Grant
    replayed: bool


def _replay(
    session: Session, *, actor: Actor, grant: Grant, subscriber_id: int, benefit_id: int
) -> Issued:
    _require_visible(session, actor=actor, grant=grant)
    if (grant.subscriber_id, grant.benefit_id) != (subscriber_id, benefit_id):
        raise Conflict(
            "this idempotency key was used for another subscriber or benefit",
            field="idempotency_key",
            grant_id=grant.id,
        )
    return Issued(grant=grant, replayed=True)


def issue_grant(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    benefit_id: int,
    source: str,
    idempotency_key: str,
    zone: str,
) -> Issued:
    """Give one benefit to one subscriber, exactly once per idempotency key."""
    _require_issue(actor)
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise ValidationFailed(
            "idempotency key must be 1 to 128 characters", field="idempotency_key"
        )
    source = source.strip()
    if not source or len(source) > 64:
        raise ValidationFailed("source must be 1 to 64 characters", field="source")
    existing = repo.get_by_key(session, key)
    if existing is not None:
        return _replay(
            session, actor=actor, grant=existing, subscriber_id=subscriber_id, benefit_id=benefit_id
        )
    benefit = catalog.get_benefit(session, benefit_id=benefit_id)
    if not _partner_may_see(session, actor=actor, partner_id=benefit.partner_id):
        raise NotFound(f"no benefit {benefit_id}", field="benefit_id")
    if benefit.status != BenefitStatus.LISTED.value:
        raise Conflict(f"benefit is {benefit.status}, not listed", field="benefit_id")
    now = clock.now()
    # In UTC, as the ledger gives it back: a replay reads the stored grant, and the first answer
    # must be the same, field for field, not the same instant in the operator's zone.
    valid_until = catalog_rules.valid_until(
        kind=ValidityKind(benefit.validity_kind),
        granted_at=now,
        zone=zone,
        valid_days=benefit.valid_days,
        fixed_until=benefit.valid_until,
    ).astimezone(UTC)
    if valid_until <= now:
        raise Conflict("this benefit's validity has ended", field="benefit_id")
    repo.begin_write(session)
    try:
        # A savepoint: if a concurrent request with the same key wins, only this attempt is undone.
        with session.begin_nested():
            grant = _create(
                session,
                actor=actor,
                benefit=benefit,
                subscriber_id=subscriber_id,
                source=source,
                key=key,
                zone=zone,
                now=now,
                valid_until=valid_until,
            )
    except IntegrityError:
        winner = repo.get_by_key(session, key)
        if winner is None:
            raise
        return _replay(
            session, actor=actor, grant=winner, subscriber_id=subscriber_id, benefit_id=benefit_id
        )
    metrics.GRANTS_ISSUED.labels(path="one").inc()
    return Issued(grant=grant, replayed=False)


def _create(
    session: Session,
    *,
    actor: Actor,
    benefit: Any,
    subscriber_id: int,
    source: str,
    key: str,
    zone: str,
    now: datetime,
    valid_until: datetime,
) -> Grant:
    # Share lock on the subscriber first: a churn or suspension waits for this grant, then binds it.
    subscribers.hold_active_subscriber(session, actor=actor, subscriber_id=subscriber_id)
    kind = FulfilmentKind(benefit.fulfilment_kind)
    # Only a partner's direct recharge waits; everything else is fulfilled in this transaction.
    immediate = kind != FulfilmentKind.DIRECT_RECHARGE
    grant = Grant(
        idempotency_key=key,
        subscriber_id=subscriber_id,
        benefit_id=benefit.id,
        partner_id=benefit.partner_id,
        source=source,
        status=(GrantStatus.FULFILLED if immediate else GrantStatus.PENDING).value,
        period=month_period(now, zone),
        sale_price_fen=benefit.sale_price_fen,
        cost_price_fen=benefit.cost_price_fen,
        partner_order_id="CP-" + token(9) if kind == FulfilmentKind.COUPON else None,
        valid_until=valid_until,
        created_at=now,
        updated_at=now,
        fulfilled_at=now if immediate else None,
    )
    session.add(grant)
    session.flush()  # the unique idempotency key decides between concurrent requests, here
    _count(session, grant=grant, limits=(benefit.limit_per_month, benefit.limit_total))
    _event(
        session,
        grant_id=grant.id,
        from_status=None,
        to_status="pending",
        reason=f"issued via {source}",
    )
    if kind == FulfilmentKind.DIRECT_RECHARGE:
        # Transactional outbox: the request to the partner commits with the grant or not at all.
        repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.FULFIL,
            at=now,
            payload={"took_stock": benefit.stock_total is not None},
        )
    else:
        if kind == FulfilmentKind.SERVICE:
            grant.partner_order_id = f"WO-{grant.id:08d}"
        done = {
            FulfilmentKind.CARD_CODE: "card code allocated",
            FulfilmentKind.COUPON: "coupon code issued",
            FulfilmentKind.SERVICE: f"in-house work order {grant.partner_order_id} opened",
        }[kind]
        _event(
            session, grant_id=grant.id, from_status="pending", to_status="fulfilled", reason=done
        )
    org.record_audit(
        session,
        actor=actor,
        action="grant.issue",
        target_type="grant",
        target_id=str(grant.id),
        details={
            "subscriber_id": subscriber_id,
            "benefit_id": benefit.id,
            "source": source,
            "status": grant.status,
        },
    )
    # The benefit's stock row is the one every grant of it contends for: taken last, so its lock
    # is held only from here to the commit.
    reservation = catalog.reserve_for_grant(session, benefit=benefit, zone=zone)
    if reservation.card_code_id is not None:
        grant.card_code_id = reservation.card_code_id
    session.flush()  # the card code lands on the grant inside the savepoint
    return grant
