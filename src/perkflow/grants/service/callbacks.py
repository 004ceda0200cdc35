"""Grants use cases: partner callbacks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import NotFound, Unauthenticated, ValidationFailed
from perkflow.grants import repository as repo
from perkflow.grants.rules import (
    OutboxKind,
    OutboxStatus,
    signature_problem,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import subscriber_actor as subscriber_actor

from .access import _partner_actor
from .lifecycle import _fail
from .outbox import _confirm
from .steps import _partner_secret

# --- partner callbacks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackResult:
    """How a partner's callback was taken: applied, or acknowledged as a duplicate."""

    grant_id: int
    outcome: str
    duplicate: bool


def _callback_fields(body: bytes) -> tuple[str, int, str, str | None]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ValidationFailed("body must be JSON", field="body") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object", field="body")
    callback_id = data.get("callback_id")
    if not isinstance(callback_id, str) or not 1 <= len(callback_id) <= 128:
        raise ValidationFailed("callback_id must be 1 to 128 characters", field="callback_id")
    grant_id = data.get("grant_id")
    if not isinstance(grant_id, int) or isinstance(grant_id, bool) or grant_id < 1:
        raise ValidationFailed("grant_id must be a positive integer", field="grant_id")
    status = data.get("status")
    if status not in ("fulfilled", "failed"):
        raise ValidationFailed("status must be fulfilled or failed", field="status")
    order = data.get("order_id")
    return callback_id, grant_id, str(status), str(order)[:128] if order is not None else None


def receive_callback(
    session: Session, *, vault: Vault, partner_code: str, body: bytes, signature: str | None
) -> CallbackResult:
    """Take a partner's signed callback once; a duplicate is acknowledged and changes nothing."""
    callback_id, grant_id, status, order_id = _callback_fields(body)
    grant = repo.get(session, grant_id)
    partner = catalog.get_partner(session, partner_id=grant.partner_id) if grant else None
    if grant is None or partner is None or partner.code != partner_code:
        raise NotFound(f"no grant {grant_id} of partner {partner_code}", field="grant_id")
    secret = _partner_secret(vault, partner)
    problem = (
        "partner has no shared secret"
        if secret is None
        else signature_problem(secret, body, signature, now_ts=int(clock.now().timestamp()))
    )
    if problem:
        raise Unauthenticated(problem, field="signature")
    # Locked only once the partner is known to be who it says: the grant row, then messages.
    grant = repo.lock(session, grant_id)
    assert grant is not None
    now = clock.now()
    repo.begin_write(session)
    try:
        # The unique (partner, callback id) decides: the second copy cannot insert.
        with session.begin_nested():
            row = repo.add_callback(
                session,
                partner_id=partner.id,
                callback_id=callback_id,
                grant_id=grant.id,
                outcome="received",
                at=now,
            )
            session.flush()
    except IntegrityError:
        return CallbackResult(grant_id=grant.id, outcome="duplicate", duplicate=True)
    if status == "fulfilled":
        outcome = _confirm(session, grant=grant, order_id=order_id, reason="partner callback")
        for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
            if message.status == OutboxStatus.PENDING.value:
                repo.settle_message(
                    session,
                    message_id=message.id,
                    at=now,
                    status=OutboxStatus.DONE,
                    error="confirmed by callback",
                )
    else:
        outcome = "ignored"
        if _fail(session, grant=grant, reason="partner reported failure"):
            outcome = "failed"
            # Into the dead-letter list, where staff can re-drive it.
            for message in repo.messages_of(session, grant.id, OutboxKind.FULFIL):
                if message.status == OutboxStatus.PENDING.value:
                    repo.settle_message(
                        session,
                        message_id=message.id,
                        at=now,
                        status=OutboxStatus.DEAD,
                        error="partner reported failure",
                    )
    row.outcome = outcome[:32]
    org.record_audit(
        session,
        actor=_partner_actor(partner),
        action="grant.callback",
        target_type="grant",
        target_id=str(grant.id),
        details={"callback_id": callback_id, "status": status, "outcome": outcome},
    )
    return CallbackResult(grant_id=grant.id, outcome=outcome, duplicate=False)
