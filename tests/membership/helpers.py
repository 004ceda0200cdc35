"""Test helpers for membership: the default programme, a frozen clock, ledger invariants."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.membership.models import PointsEntry, PointsLot, PointsPosting
from perkflow.org.rules import SYSTEM
from tests.factories import make_subscribers

ZONE = "Asia/Shanghai"
_phones = itertools.count(13900000000 + 1)


def phones(n: int, province: str = "GD", city: str = "GD01") -> list[tuple[str, str, str]]:
    return [(str(next(_phones)), province, city) for _ in range(n)]


def default_program(session: Session, vault: Vault) -> None:
    """The packaged silver / gold / diamond programme with its catalog, committed."""
    membership.load_default_program(session, actor=SYSTEM, vault=vault)
    session.commit()


def subscriber(session: Session, vault: Vault, *, plan_fee_fen: int, status: str = "active") -> int:
    [sid] = make_subscribers(session, vault, phones(1), plan_fee_fen=plan_fee_fen, status=status)
    return sid


def tier_of(session: Session, sid: int) -> str | None:
    card = membership.member_card(session, subscriber_id=sid, zone=ZONE)
    return card.tier.code if card.tier else None


@contextmanager
def frozen(at: datetime = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)) -> Iterator[clock.FrozenClock]:
    """A clock that only moves when told to, restored afterwards."""
    fake = clock.FrozenClock(at)
    clock.set_clock(fake)
    try:
        yield fake
    finally:
        clock.set_clock(None)


def points_invariants(session: Session, sid: int) -> dict[str, Any]:
    """Balance = sum of the member's postings = points left in lots ≥ 0; each entry sums to 0."""
    balance = membership.points_balance(session, subscriber_id=sid)
    ledger = membership.ledger_sum(session, subscriber_id=sid)
    lots = session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.subscriber_id == sid
        )
    )
    unbalanced = session.execute(
        select(PointsPosting.entry_id)
        .where(PointsPosting.subscriber_id == sid)
        .group_by(PointsPosting.entry_id)
        .having(func.sum(PointsPosting.points) != 0)
    ).all()
    legs = session.execute(
        select(PointsEntry.id, func.count(PointsPosting.id))
        .join(PointsPosting, PointsPosting.entry_id == PointsEntry.id)
        .where(PointsEntry.subscriber_id == sid)
        .group_by(PointsEntry.id)
    ).all()
    assert balance == ledger == int(lots or 0), (balance, ledger, lots)
    assert balance >= 0
    assert not unbalanced
    assert all(n == 2 for _, n in legs)
    return {"balance": balance}
