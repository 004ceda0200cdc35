"""Binding (绑): unredeemed coupons follow the subscriber's network status."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.rules import (
    CouponStatus,
)
from perkflow.org import service as org
from perkflow.org.rules import Actor
from perkflow.subscribers.rules import Status as SubscriberStatus


@dataclass(frozen=True)
class CouponBinding:
    """What binding did to one subscriber's unredeemed coupons."""

    voided: list[int]
    paused: list[int]
    resumed: list[int]

    @property
    def changed(self) -> int:
        return len(self.voided) + len(self.paused) + len(self.resumed)


def bind_coupons(
    session: Session, *, actor: Actor, subscriber_id: int, status: SubscriberStatus, reason: str
) -> CouponBinding:
    """Make a subscriber's unredeemed coupons follow their network status; audited."""
    # Called by the status change (grants.change_subscriber_status), in its transaction, after
    # the subscriber row changed: churn voids, suspension pauses, reactivation resumes.
    claimed, paused, void = (
        CouponStatus.CLAIMED.value,
        CouponStatus.PAUSED.value,
        CouponStatus.VOID.value,
    )
    moves: dict[SubscriberStatus, tuple[tuple[str, ...], str]] = {
        SubscriberStatus.CHURNED: ((claimed, paused), void),
        SubscriberStatus.SUSPENDED: ((claimed,), paused),
        SubscriberStatus.ACTIVE: ((paused,), claimed),
    }
    expected, target = moves[status]
    moved = repo.move_subscriber_coupons(
        session, subscriber_id=subscriber_id, expected=expected, target=target
    )
    if moved:
        org.record_audit(
            session,
            actor=actor,
            action="coupon.binding",
            target_type="subscriber",
            target_id=str(subscriber_id),
            details={"to": target, "coupons": moved[:200], "count": len(moved), "reason": reason},
        )
    return CouponBinding(
        voided=moved if target == void else [],
        paused=moved if target == paused else [],
        resumed=moved if target == claimed else [],
    )
