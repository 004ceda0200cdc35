"""The console home: coupon activity and low-stock batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    Coupon,
    CouponBatch,
    Redemption,
)
from perkflow.coupons.rules import (
    BatchStatus,
)
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers


@dataclass(frozen=True)
class CouponActivity:
    """Coupons claimed and redeemed today and this month."""

    claims_today: int
    claims_month: int
    redemptions_today: int
    redemptions_month: int


def coupon_activity(session: Session, *, actor: Actor, zone: str) -> CouponActivity:
    """Claims and redemptions today and this month, by the actor's region's subscribers."""
    from sqlalchemy import and_, case, func, select

    org.require(actor, Perm.DASHBOARD)
    tz = ZoneInfo(zone)
    today = clock.now().astimezone(tz).date()
    day = datetime.combine(today, datetime.min.time(), tzinfo=tz)
    month = datetime.combine(today.replace(day=1), datetime.min.time(), tzinfo=tz)
    province = org.visible_province(actor)
    members = subscribers.ids_in_province(province=province) if province else None

    def today_and_month(column: Any) -> tuple[Any, Any]:
        return (
            func.coalesce(func.sum(case((column >= day, 1), else_=0)), 0),
            func.count(),
        )

    claims = select(*today_and_month(Coupon.claimed_at)).where(Coupon.claimed_at >= month)
    redeemed = (
        select(*today_and_month(Redemption.at))
        .join(Coupon, Coupon.id == Redemption.coupon_id)
        .where(and_(Redemption.at >= month, Redemption.status == "done"))
    )
    if members is not None:
        claims = claims.where(Coupon.subscriber_id.in_(members))
        redeemed = redeemed.where(Coupon.subscriber_id.in_(members))
    c_today, c_month = session.execute(claims).one()
    r_today, r_month = session.execute(redeemed).one()
    return CouponActivity(
        claims_today=int(c_today),
        claims_month=int(c_month),
        redemptions_today=int(r_today),
        redemptions_month=int(r_month),
    )


def low_stock_batches(
    session: Session, *, actor: Actor, share: float = 0.1
) -> list[tuple[CouponBatch, int, int]]:
    """Active batches of the actor's region (and national ones) with at most `share` left."""
    org.require(actor, Perm.DASHBOARD)
    province = org.visible_province(actor)
    batches = repo.list_batches(
        session,
        owner_regions=[province, "CN"] if province else None,
        statuses=[BatchStatus.ACTIVE.value],
    )
    levels = repo.stock_levels(session, [b.id for b in batches])
    out = []
    for b in batches:
        remaining, total = levels.get(b.id, (0, 0))
        if total and remaining <= total * share:
            out.append((b, remaining, total))
    return sorted(out, key=lambda row: row[1] / row[2])
