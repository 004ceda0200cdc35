"""Delivery receipts: those the channels report, and those asked for when they never came."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import repository as repo
from perkflow.channels.rules import AsksForReceipts, Receipt
from perkflow.db import unit_of_work
from perkflow.kit import clock

from .dispatcher import Dispatcher

log = logging.getLogger("perkflow.campaigns.worker")


def _settle_receipts(sessions: sessionmaker[Session], receipts: Sequence[Receipt]) -> int:
    """Apply delivery reports in one transaction; how many contacts they settled."""
    with unit_of_work(sessions) as session:
        n = sum(
            repo.apply_receipt(
                session,
                message_ref=r.message_ref,
                delivered=r.delivered,
                error=r.error,
                at=clock.now(),
            )
            for r in receipts
        )
        session.commit()
    return n


def apply_receipts(sessions: sessionmaker[Session], dispatcher: Dispatcher) -> int:
    """Delivery reports from every channel: sent contacts become delivered or failed."""
    n = 0
    for channel in dispatcher.channels.values():
        receipts = channel.receipts()
        if not receipts:
            continue
        n += _settle_receipts(sessions, receipts)
    return n


# Messages older than this are not asked about any more (an SMSC keeps them 2-3 days at most).
RECEIPT_QUERY_HORIZON = timedelta(days=3)


RECEIPT_QUERY_BATCH = 500


def recover_receipts(
    sessions: sessionmaker[Session], dispatcher: Dispatcher, *, now: datetime | None = None
) -> int:
    """Ask the channels that can about contacts whose receipt never came; settle the final ones."""
    tick = dispatcher.monotonic()
    last = dispatcher.receipts_queried_at
    if last is not None and tick - last < dispatcher.receipt_query_every_s:
        return 0
    dispatcher.receipts_queried_at = tick
    at = now or clock.now()
    n = 0
    for name, channel in sorted(dispatcher.channels.items()):
        if not isinstance(channel, AsksForReceipts):
            continue
        with unit_of_work(sessions) as session:
            refs = repo.unreceipted(
                session,
                channel=name,
                since=at - RECEIPT_QUERY_HORIZON,
                before=at - timedelta(seconds=dispatcher.receipt_query_after_s),
                limit=RECEIPT_QUERY_BATCH,
            )
        receipts = channel.query(refs) if refs else []
        if not receipts:
            continue
        n += _settle_receipts(sessions, receipts)
        log.info("channel %s: %d receipts recovered by asking the peer", name, n)
    return n
