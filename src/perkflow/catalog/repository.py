"""Queries over the catalog; the stock and code statements are atomic on their own."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from perkflow.catalog.models import Benefit, CardCode, Partner
from perkflow.catalog.rules import CodeStatus


def get_benefit(session: Session, benefit_id: int) -> Benefit | None:
    return session.get(Benefit, benefit_id)


def get_partner(session: Session, partner_id: int) -> Partner | None:
    return session.get(Partner, partner_id)


def take_stock(session: Session, benefit_id: int) -> bool:
    """Decrement limited stock if any is left; True when this call got a unit."""
    result = session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.stock_remaining > 0)
        .values(stock_remaining=Benefit.stock_remaining - 1)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def give_back_stock(session: Session, benefit_id: int) -> None:
    """Return one unit of limited stock (a failed or revoked-before-fulfilment grant)."""
    session.execute(
        update(Benefit)
        .where(Benefit.id == benefit_id, Benefit.stock_remaining.is_not(None))
        .values(stock_remaining=Benefit.stock_remaining + 1)
        .execution_options(synchronize_session=False)
    )


def allocate_code(session: Session, benefit_id: int, *, today: date, at: datetime) -> int | None:
    """Mark one available, unexpired code allocated and return its id, or None if none is left."""
    # SKIP LOCKED lets concurrent allocations on PostgreSQL take different codes instead of
    # queueing on the same row; SQLite serialises writers and ignores the clause.
    candidate = (
        select(CardCode.id)
        .where(
            CardCode.benefit_id == benefit_id,
            CardCode.status == CodeStatus.AVAILABLE.value,
            or_(CardCode.expires_on.is_(None), CardCode.expires_on >= today),
        )
        .order_by(CardCode.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.execute(
        update(CardCode)
        .where(CardCode.id == candidate, CardCode.status == CodeStatus.AVAILABLE.value)
        .values(status=CodeStatus.ALLOCATED.value, allocated_at=at)
        .returning(CardCode.id)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return int(row[0]) if row else None


def free_code(session: Session, code_id: int) -> None:
    """Put an allocated code back in the pool."""
    session.execute(
        update(CardCode)
        .where(CardCode.id == code_id, CardCode.status == CodeStatus.ALLOCATED.value)
        .values(status=CodeStatus.AVAILABLE.value, allocated_at=None)
        .execution_options(synchronize_session=False)
    )


def get_code(session: Session, code_id: int) -> CardCode | None:
    return session.get(CardCode, code_id)
