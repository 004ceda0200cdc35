"""Grants use cases: the dead-letter list."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import Conflict, NotFound
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant, OutboxMessage
from perkflow.grants.rules import (
    GrantStatus,
    OutboxKind,
    OutboxStatus,
)
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.org.rules import subscriber_actor as subscriber_actor

from .steps import _count, _event

# --- the dead-letter list -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A message that ran out of attempts, with its grant."""

    message: OutboxMessage
    grant: Grant
    benefit_code: str
    partner_code: str


def dead_letters(
    session: Session, *, actor: Actor, offset: int = 0, limit: int = 50
) -> tuple[list[DeadLetter], int]:
    """Messages that gave up, newest first (hq_admin)."""
    org.require(actor, Perm.GRANTS_REDRIVE)
    rows, total = repo.dead_page(session, offset=offset, limit=limit)
    out = []
    for message, grant in rows:
        benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
        partner = catalog.get_partner(session, partner_id=grant.partner_id)
        out.append(DeadLetter(message, grant, benefit.code, partner.code))
    return out, total


def redrive(session: Session, *, actor: Actor, message_id: int, zone: str) -> OutboxMessage:
    """Send a dead message again: a failed grant goes back to pending and re-reserves its stock."""
    org.require(actor, Perm.GRANTS_REDRIVE)
    message = repo.get_message(session, message_id)
    if message is None:
        raise NotFound(f"no outbox message {message_id}", field="message_id")
    grant = repo.lock(session, message.grant_id)
    assert grant is not None
    now = clock.now()
    # Compare-and-set on the dead message: a double click re-drives once.
    if not repo.settle_message(
        session,
        message_id=message.id,
        at=now,
        status=OutboxStatus.DONE,
        expected=OutboxStatus.DEAD,
        error=f"re-driven by {actor.name}",
    ):
        raise Conflict("this message is not in the dead-letter list any more", field="message_id")
    if message.kind == OutboxKind.FULFIL.value:
        if not repo.move(
            session,
            grant_id=grant.id,
            expected=GrantStatus.FAILED.value,
            target=GrantStatus.PENDING.value,
            at=now,
            failure_reason=None,
        ):
            raise Conflict(f"grant {grant.id} is {grant.status}, not failed", field="message_id")
        # A revoke queued when the grant failed must not cancel the order we are about to make.
        for pending in repo.messages_of(session, grant.id, OutboxKind.REVOKE):
            if pending.status == OutboxStatus.PENDING.value:
                repo.settle_message(
                    session,
                    message_id=pending.id,
                    at=now,
                    status=OutboxStatus.DONE,
                    error="cancelled: grant re-driven",
                )
        benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
        _count(session, grant=grant, limits=(benefit.limit_per_month, benefit.limit_total))
        reservation = catalog.reserve_for_grant(session, benefit=benefit, zone=zone)
        new = repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.FULFIL,
            at=now,
            payload={"took_stock": reservation.took_stock, "redrive_of": message.id},
        )
        _event(
            session,
            grant_id=grant.id,
            from_status="failed",
            to_status="pending",
            reason=f"re-driven by {actor.name}",
        )
    else:
        new = repo.add_message(
            session,
            grant_id=grant.id,
            kind=OutboxKind.REVOKE,
            at=now,
            payload=dict(message.payload),
        )
    session.flush()  # the new message's id goes into the audit entry
    org.record_audit(
        session,
        actor=actor,
        action="grant.redrive",
        target_type="grant",
        target_id=str(grant.id),
        details={"dead_message": message.id, "new_message": new.id, "kind": message.kind},
    )
    return new
