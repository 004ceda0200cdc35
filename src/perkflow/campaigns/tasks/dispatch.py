"""Dispatch: one batch claimed, sent per channel and each outcome recorded; then receipts."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.rules import ContactStatus
from perkflow.channels.rules import Message, SendResult
from perkflow.db import unit_of_work
from perkflow.kit import clock, metrics

from .claims import _claim
from .dispatcher import Dispatcher, DispatchReport, _Claimed
from .receipts import apply_receipts, recover_receipts

log = logging.getLogger("perkflow.campaigns.worker")


NOT_CONFIGURED = "channel not configured"


def _settle(
    session: Session,
    d: Dispatcher,
    items: Sequence[_Claimed],
    results: Mapping[int, SendResult],
    *,
    now: datetime,
    report: DispatchReport,
) -> None:
    """Record each held attempt's outcome; one statement per kind of outcome, not per contact."""
    delivered: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    retry: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item in items:
        result = results.get(item.contact_id) or SendResult(
            item.contact_id, ok=False, error="no result from the channel"
        )
        held = {"contact_id": item.contact_id, "attempts": item.attempts}
        if result.ok:
            row = {**held, "message_ref": result.message_ref, "contacted_at": now, "error": None}
            if result.delivered:
                delivered.append({**row, "delivered_at": now})
            else:
                sent.append(row)
            continue
        error = (result.error or "send failed")[:255]
        if result.retryable and item.attempts < d.max_attempts:
            wait = rules.backoff_s(item.attempts, base_s=d.backoff_base_s)
            retry.append({**held, "next_attempt_at": now + timedelta(seconds=wait), "error": error})
        else:
            # Never dropped silently: the contact ends failed with the last error, and counts as
            # treated.
            failed.append({**held, "error": error, "contacted_at": now})
    n_delivered = repo.settle_contacts(
        session, target=ContactStatus.DELIVERED.value, rows=delivered
    )
    report.sent += n_delivered + repo.settle_contacts(
        session, target=ContactStatus.SENT.value, rows=sent
    )
    report.delivered += n_delivered
    report.retried += repo.settle_contacts(session, target=ContactStatus.QUEUED.value, rows=retry)
    report.failed += repo.settle_contacts(session, target=ContactStatus.FAILED.value, rows=failed)


def dispatch_batch(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    batch_size: int = 200,
    now: datetime | None = None,
    campaign_id: int | None = None,
) -> DispatchReport:
    """Claim due contacts, send them per channel and record each outcome; then apply receipts."""
    report = DispatchReport()
    at = now or clock.now()
    with unit_of_work(sessions) as session:
        claimed = _claim(
            session,
            dispatcher,
            now=at,
            batch_size=batch_size,
            report=report,
            campaign_id=campaign_id,
        )
        session.commit()
    report.claimed = len(claimed)
    by_channel: dict[str, list[_Claimed]] = {}
    for item in claimed:
        by_channel.setdefault(item.channel, []).append(item)
    for name, items in sorted(by_channel.items()):
        channel = dispatcher.channels.get(name)
        ready = [i for i in items if i.error is None and channel is not None]
        ready_ids = {i.contact_id for i in ready}
        results: dict[int, SendResult] = {
            i.contact_id: SendResult(
                i.contact_id,
                ok=False,
                error=NOT_CONFIGURED if channel is None else i.error,
                retryable=False,
            )
            for i in items
            if i.contact_id not in ready_ids
        }
        with unit_of_work(sessions) as session:
            if ready and channel is not None:
                messages = [
                    Message(
                        contact_id=i.contact_id,
                        subscriber_id=i.subscriber_id,
                        campaign_id=i.campaign_id,
                        address=i.address or "",
                        subject=i.subject,
                        body=i.body,
                        link=i.link,
                    )
                    for i in ready
                ]
                try:
                    # In-app writes its inbox rows into this session: they commit with the marks.
                    for r in channel.send(session, messages):
                        results[r.contact_id] = r
                except Exception as exc:
                    log.exception("channel %s: send crashed", name)
                    session.rollback()
                    for i in ready:
                        results[i.contact_id] = SendResult(
                            i.contact_id, ok=False, error=f"{name}: {exc!r}"[:255]
                        )
                sent = sum(1 for i in ready if i.contact_id in results and results[i.contact_id].ok)
                metrics.DISPATCHED.labels(channel=name, outcome="sent").inc(sent)
                metrics.DISPATCHED.labels(channel=name, outcome="failed").inc(len(ready) - sent)
            _settle(session, dispatcher, items, results, now=at, report=report)
            session.commit()
    report.receipts = apply_receipts(sessions, dispatcher)
    report.receipts += recover_receipts(sessions, dispatcher, now=at)
    return report
