"""Reads for other capabilities: claims and redemptions after an id, the batch of each coupon."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
    Redemption,
)


def claims_after(session: Session, *, after_id: int, limit: int) -> list[tuple[int, int, int, Any]]:
    """(coupon id, subscriber, batch, claimed_at) of coupons claimed after an id, in id order."""
    rows = session.execute(
        select(Coupon.id, Coupon.subscriber_id, Coupon.batch_id, Coupon.claimed_at)
        .where(Coupon.id > after_id)
        .order_by(Coupon.id)
        .limit(limit)
    )
    return [(int(i), int(s), int(b), at) for i, s, b, at in rows]


def redemptions_after(
    session: Session, *, after_id: int, limit: int
) -> list[tuple[int, int, int, Any, int]]:
    """(redemption id, subscriber, batch, at, order fen) of standing redemptions after an id."""
    # The time the clerk took it: an offline upload reaches the ledger later than it happened.
    rows = session.execute(
        select(
            Redemption.id,
            Coupon.subscriber_id,
            Redemption.batch_id,
            Redemption.recorded_at,
            Redemption.order_fen,
        )
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .where(Redemption.id > after_id, Redemption.status == "done")
        .order_by(Redemption.id)
        .limit(limit)
    )
    return [(int(i), int(s), int(b), at, int(v)) for i, s, b, at, v in rows]


def batches_of_coupons(session: Session, coupon_ids: Sequence[int]) -> dict[int, CouponBatch]:
    """The batch of each of these coupons, by coupon id."""
    if not coupon_ids:
        return {}
    rows = session.execute(
        select(Coupon.id, CouponBatch)
        .join(CouponBatch, CouponBatch.id == Coupon.batch_id)
        .where(Coupon.id.in_(coupon_ids))
    ).all()
    return {int(i): b for i, b in rows}
