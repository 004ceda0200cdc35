"""Queries over redemptions: the compare-and-set redemption, reversal, a store's day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
    Redemption,
)

from ._sql import _rowcount


def coupon_by_hash(session: Session, code_hash: str) -> Coupon | None:
    # populate_existing: statuses move by Core CAS statements, so never trust a cached row.
    return session.scalar(
        select(Coupon)
        .where(Coupon.code_hash == code_hash)
        .execution_options(populate_existing=True)
    )


def get_coupon(session: Session, coupon_id: int) -> Coupon | None:
    return session.get(Coupon, coupon_id, populate_existing=True)


def cas_coupon(
    session: Session, *, coupon_id: int, expected: str, target: str, at: datetime | None
) -> bool:
    """Move a coupon's status only from `expected`: of two clerks, exactly one moves it."""
    result = session.execute(
        update(Coupon)
        .where(Coupon.id == coupon_id, Coupon.status == expected)
        .values(status=target, redeemed_at=at)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def move_subscriber_coupons(
    session: Session, *, subscriber_id: int, expected: Sequence[str], target: str
) -> list[int]:
    """Move one subscriber's coupons in an `expected` status to `target` (binding): the ids."""
    # One set-based UPDATE: a clerk's compare-and-set on one of these rows either ran first
    # (the coupon is redeemed and stays so) or finds the coupon moved and redeems nothing.
    result = session.execute(
        update(Coupon)
        .where(Coupon.subscriber_id == subscriber_id, Coupon.status.in_(list(expected)))
        .values(status=target)
        .returning(Coupon.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(int(i) for i in result.scalars())


def get_redemption(session: Session, redemption_id: int) -> Redemption | None:
    return session.get(Redemption, redemption_id, populate_existing=True)


def redemption_by_ref(session: Session, *, store_code: str, client_ref: str) -> Redemption | None:
    return session.scalar(
        select(Redemption).where(
            Redemption.store_code == store_code, Redemption.client_ref == client_ref
        )
    )


def cas_reverse(
    session: Session, *, redemption_id: int, at: datetime, by: str, reason: str
) -> bool:
    result = session.execute(
        update(Redemption)
        .where(Redemption.id == redemption_id, Redemption.status == "done")
        .values(status="reversed", reversed_at=at, reversed_by=by, reverse_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def store_redemptions(
    session: Session, *, store_code: str, since: datetime
) -> Sequence[tuple[Redemption, Coupon, CouponBatch]]:
    rows = session.execute(
        select(Redemption, Coupon, CouponBatch)
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .join(CouponBatch, CouponBatch.id == Redemption.batch_id)
        .where(Redemption.store_code == store_code, Redemption.at >= since)
        .order_by(Redemption.id.desc())
        .limit(500)
    ).all()
    return [(r, c, b) for r, c, b in rows]


def _minute(session: Session, col: Any) -> ColumnElement[Any]:
    """Whole minutes since the epoch of a timestamp column, in the dialect's words."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", col) / 60), Integer)
    return cast(func.strftime("%s", col), Integer) / 60


def per_minute(
    session: Session, *, batch_id: int, since: datetime, what: str
) -> list[tuple[int, int]]:
    """(epoch minute, count) of claims or redemptions of a batch since a moment."""
    col = Coupon.claimed_at if what == "claims" else Redemption.at
    table_batch = Coupon.batch_id if what == "claims" else Redemption.batch_id
    minute = _minute(session, col).label("m")
    stmt = (
        select(minute, func.count())
        .where(and_(table_batch == batch_id, col >= since))
        .group_by(minute)
        .order_by(minute)
    )
    return [(int(m), int(n)) for m, n in session.execute(stmt)]


def redemption_count(session: Session, batch_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).where(Redemption.batch_id == batch_id, Redemption.status == "done")
        )
        or 0
    )
