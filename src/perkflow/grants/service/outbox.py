"""Grants use cases: the outbox (claiming, delivering, recording)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant
from perkflow.grants.rules import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    GrantStatus,
    OutboxKind,
    OutboxStatus,
    Outcome,
    OutcomeKind,
    backoff_s,
    sign,
)
from perkflow.kit import clock, metrics
from perkflow.kit.crypto import Vault
from perkflow.org.rules import subscriber_actor as subscriber_actor

from .lifecycle import _ensure_revoke_message, _fail
from .steps import _event, _has_connector, _partner_secret

# --- the outbox: claiming, delivering, recording --------------------------------------------------


def claim_messages(
    session: Session, *, worker: str, now: datetime, lease_s: float, limit: int
) -> list[int]:
    """Lease up to `limit` due messages for one worker; two workers never hold the same one."""
    until = now + timedelta(seconds=lease_s)
    # Leased in id order, so two workers claiming overlapping sets cannot deadlock.
    candidates = sorted(repo.due_message_ids(session, now=now, limit=limit))
    return [
        i
        for i in candidates
        if repo.lease(session, message_id=i, worker=worker, now=now, until=until)
    ]


def subscriber_ref(vault: Vault, *, partner_code: str, subscriber_id: int) -> str:
    """The opaque id a partner knows a subscriber by: never the phone, different per partner."""
    return vault.lookup.digest(f"partner-subscriber:{partner_code}:{subscriber_id}")[:32]


def prepare_delivery(
    session: Session,
    *,
    vault: Vault,
    message_id: int,
    worker: str,
    callback_base: str,
    defer_s: float,
) -> Delivery | None:
    """The signed request for a leased message, or None when there is nothing to send now."""
    message = repo.get_message(session, message_id)
    if message is None or message.status != "pending" or message.leased_by != worker:
        return None
    grant = repo.get_fresh(session, message.grant_id)
    assert grant is not None  # a foreign key keeps the grant
    now = clock.now()
    if message.kind == OutboxKind.FULFIL.value:
        if grant.status == GrantStatus.PAUSED.value:
            # Not an attempt: the grant waits for its subscriber's reactivation.
            repo.settle_message(
                session,
                message_id=message.id,
                at=now,
                status=OutboxStatus.PENDING,
                worker=worker,
                next_attempt_at=now + timedelta(seconds=defer_s),
                error="waiting: grant is paused",
                attempts_delta=-1,
            )
            return None
        if grant.status != GrantStatus.PENDING.value:
            repo.settle_message(
                session,
                message_id=message.id,
                at=now,
                status=OutboxStatus.DONE,
                worker=worker,
                error=f"nothing to send: grant is {grant.status}",
            )
            return None
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    secret = _partner_secret(vault, partner)
    if not _has_connector(partner) or secret is None:
        record_outcome(
            session,
            message_id=message.id,
            worker=worker,
            outcome=Outcome(OutcomeKind.REJECTED, error="partner has no HTTP connector or secret"),
            backoff_base_s=0,
            callback_wait_s=0,
        )
        return None
    benefit = catalog.get_benefit(session, benefit_id=grant.benefit_id)
    body: dict[str, Any] = {
        "action": message.kind,
        "grant_id": grant.id,
        "idempotency_key": grant.idempotency_key,
        "benefit_code": benefit.code,
        "subscriber_ref": subscriber_ref(
            vault, partner_code=partner.code, subscriber_id=grant.subscriber_id
        ),
        "callback_url": f"{callback_base.rstrip('/')}/v1/partners/{partner.code}/callbacks",
    }
    if message.kind == OutboxKind.REVOKE.value:
        body["order_id"] = grant.partner_order_id or message.payload.get("order_id")
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    # A revoke has its own key: the partner must not answer it with the original order.
    key = grant.idempotency_key if message.kind == "fulfil" else f"{grant.idempotency_key}:revoke"
    return Delivery(
        message_id=message.id,
        grant_id=grant.id,
        partner_id=partner.id,
        kind=message.kind,
        url=partner.connector_url,
        body=raw,
        headers={
            "content-type": "application/json",
            IDEMPOTENCY_HEADER: key,
            SIGNATURE_HEADER: sign(secret, raw, timestamp=int(now.timestamp())),
        },
        timeout_s=partner.connector_timeout_ms / 1000,
    )


def _confirm(session: Session, *, grant: Grant, order_id: str | None, reason: str) -> str:
    """The partner fulfilled a grant: record it once, whatever state the grant reached meanwhile."""
    now = clock.now()
    if order_id:
        repo.set_order_id(session, grant_id=grant.id, order_id=order_id)
    if repo.move(
        session,
        grant_id=grant.id,
        expected=GrantStatus.PENDING.value,
        target=GrantStatus.FULFILLED.value,
        at=now,
        fulfilled_at=now,
    ):
        _event(
            session, grant_id=grant.id, from_status="pending", to_status="fulfilled", reason=reason
        )
        return "fulfilled"
    fresh = repo.get_fresh(session, grant.id)
    assert fresh is not None
    if fresh.status == GrantStatus.PAUSED.value and repo.set_paused_from(
        session, grant_id=grant.id, expected="pending", target="fulfilled"
    ):
        _event(
            session,
            grant_id=grant.id,
            from_status="paused",
            to_status="paused",
            reason=f"{reason} while paused",
        )
        return "fulfilled while paused"
    if fresh.status == GrantStatus.REVOKED.value:
        # Revoked while the request was in flight: the partner's order must be undone too.
        _ensure_revoke_message(session, grant=fresh)
        return "revoked meanwhile"
    if fresh.status == GrantStatus.FAILED.value:
        _event(
            session,
            grant_id=grant.id,
            from_status="failed",
            to_status="failed",
            reason=f"partner fulfilled after the grant failed (order {order_id}); re-drive it",
        )
        return "late"
    return "already"


def record_outcome(
    session: Session,
    *,
    message_id: int,
    worker: str,
    outcome: Outcome,
    backoff_base_s: float,
    callback_wait_s: float,
    defer_s: float = 0.0,
) -> str:
    """Apply what a delivery achieved to its message and grant; returns what happened."""
    message = repo.get_message(session, message_id)
    if message is None:
        return "gone"
    # The grant row first, then the message: the same order as binding and callbacks.
    grant = repo.lock(session, message.grant_id)
    assert grant is not None
    message = repo.get_message(session, message_id)
    assert message is not None
    partner = catalog.get_partner(session, partner_id=grant.partner_id)
    now = clock.now()
    fulfil = message.kind == OutboxKind.FULFIL.value
    if outcome.kind == OutcomeKind.DEFERRED:
        ok = repo.settle_message(
            session,
            message_id=message.id,
            at=now,
            status=OutboxStatus.PENDING,
            worker=worker,
            next_attempt_at=now + timedelta(seconds=defer_s),
            error=outcome.error,
            attempts_delta=-1,
        )
        return "deferred" if ok else "settled meanwhile"
    if outcome.kind == OutcomeKind.FULFILLED:
        what = (
            _confirm(session, grant=grant, order_id=outcome.order_id, reason="partner confirmed")
            if fulfil
            else "revoked at partner"
        )
        repo.settle_message(session, message_id=message.id, at=now, status=OutboxStatus.DONE)
        return what
    if fulfil and outcome.order_id:
        repo.set_order_id(session, grant_id=grant.id, order_id=outcome.order_id)
    exhausted = message.attempts >= partner.connector_max_attempts
    if outcome.kind == OutcomeKind.REJECTED or exhausted:
        error = outcome.error or "no confirmation"
        if outcome.kind == OutcomeKind.ACCEPTED:
            error = "partner accepted but never confirmed"
        if not repo.settle_message(
            session,
            message_id=message.id,
            at=now,
            status=OutboxStatus.DEAD,
            worker=worker,
            error=f"after {message.attempts} attempt(s): {error}",
        ):
            return "settled meanwhile"
        metrics.PARTNER_ERRORS.labels(partner=partner.code, outcome="dead").inc()
        if fulfil and _fail(session, grant=grant, reason=error):
            # A timed-out attempt may have created an order after all: have it cancelled.
            _ensure_revoke_message(session, grant=grant)
        return "dead"
    if outcome.kind == OutcomeKind.ACCEPTED:
        wait = max(callback_wait_s, backoff_s(message.attempts, base_s=backoff_base_s))
        error = "accepted; waiting for the partner's callback"
    else:
        wait = backoff_s(message.attempts, base_s=backoff_base_s)
        error = outcome.error or "retry"
    ok = repo.settle_message(
        session,
        message_id=message.id,
        at=now,
        status=OutboxStatus.PENDING,
        worker=worker,
        next_attempt_at=now + timedelta(seconds=wait),
        error=error,
    )
    if not ok:
        return "settled meanwhile"
    if outcome.kind != OutcomeKind.ACCEPTED:
        metrics.PARTNER_ERRORS.labels(partner=partner.code, outcome="retry").inc()
    return "accepted" if outcome.kind == OutcomeKind.ACCEPTED else "retry"


def outbox_counts(session: Session) -> dict[str, int]:
    """Messages per outbox status (for the worker's summary)."""
    return repo.outbox_counts(session)
