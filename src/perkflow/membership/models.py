"""Ledger tables of membership: tiers and bundles, members and their history, prepaid, points."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime

_FK_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class MembershipProgram(Base):
    """The one program's settings: downgrade grace and the points rules (row id 1)."""

    __tablename__ = "membership_program"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grace_days: Mapped[int] = mapped_column(Integer)
    points_per_yuan: Mapped[int] = mapped_column(Integer)
    points_expiry_years: Mapped[int] = mapped_column(Integer)
    point_value_fen_per_100: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MemberTier(Base):
    """A tier (silver, gold, diamond…): its level, points multiplier and qualification rule."""

    __tablename__ = "member_tiers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(64))
    # Retired tiers keep their level for history; only active levels are unique in practice.
    level: Mapped[int] = mapped_column(Integer)
    points_multiplier_pct: Mapped[int] = mapped_column(Integer)
    qualify: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BundleItem(Base):
    """One benefit of a tier's bundle: granted each cycle (auto) or an option of a pick group."""

    __tablename__ = "member_bundle_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("member_tiers.id"), index=True)
    benefit_id: Mapped[int] = mapped_column(ForeignKey("benefits.id"))
    mode: Mapped[str] = mapped_column(String(8))
    cadence: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer)
    value_fen: Mapped[int] = mapped_column(Integer)
    pick_group: Mapped[str | None] = mapped_column(String(32), default=None)
    choose: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer)
    # Items of a replaced program stay (bundle grants refer to them) but are no longer offered.
    active: Mapped[bool] = mapped_column(default=True)


class Member(Base):
    """A subscriber's current tier and, during a grace period, the downgrade that is due."""

    __tablename__ = "members"

    subscriber_id: Mapped[int] = mapped_column(
        _FK_BIGINT, ForeignKey("subscribers.id"), primary_key=True
    )
    tier_id: Mapped[int | None] = mapped_column(ForeignKey("member_tiers.id"), index=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    # A scheduled downgrade: to `pending_tier_id` (None: no tier) at `downgrade_due_at`.
    pending_tier_id: Mapped[int | None] = mapped_column(ForeignKey("member_tiers.id"), default=None)
    downgrade_due_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None, index=True
    )
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TierChange(Base):
    """Every change of a member's tier (and each scheduled or cancelled downgrade), with why."""

    __tablename__ = "member_tier_changes"
    __table_args__ = (Index("ix_member_tier_changes_at_kind", "at", "kind"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, index=True)
    from_tier_id: Mapped[int | None] = mapped_column(Integer)
    to_tier_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class PrepaidAccount(Base):
    """A subscriber's prepaid balance; it moves only with a PrepaidEvent in the same transaction."""

    __tablename__ = "prepaid_accounts"

    subscriber_id: Mapped[int] = mapped_column(
        _FK_BIGINT, ForeignKey("subscribers.id"), primary_key=True
    )
    balance_fen: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PrepaidEvent(Base):
    """One prepayment (positive) or use of prepaid money (negative), idempotent by key."""

    __tablename__ = "prepaid_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    reason: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class BundleGrant(Base):
    """A bundle benefit given for one cycle: unique per subscriber, cycle and slot."""

    __tablename__ = "member_bundle_grants"
    __table_args__ = (UniqueConstraint("subscriber_id", "cycle", "slot"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT)
    tier_id: Mapped[int] = mapped_column(Integer)
    bundle_item_id: Mapped[int] = mapped_column(ForeignKey("member_bundle_items.id"))
    cycle: Mapped[str] = mapped_column(String(7))
    # `item:<id>:<unit>` for an automatic benefit, `pick:<group>:<n>` for a chosen one.
    slot: Mapped[str] = mapped_column(String(48))
    grant_id: Mapped[int | None] = mapped_column(_FK_BIGINT, default=None)
    value_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class PointsAccount(Base):
    """A member's points balance: the sum of its postings, moved by conditional UPDATEs."""

    __tablename__ = "points_accounts"

    subscriber_id: Mapped[int] = mapped_column(
        _FK_BIGINT, ForeignKey("subscribers.id"), primary_key=True
    )
    balance: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PointsEntry(Base):
    """One journal entry (earn, bonus, burn, expire, reverse, forfeit), idempotent by key."""

    __tablename__ = "points_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The entry's effect on the member's balance (signed).
    points: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    reason: Mapped[str] = mapped_column(String(255))
    ref: Mapped[str | None] = mapped_column(String(128), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class PointsPosting(Base):
    """One leg of an entry: the member's account and its counter account, summing to zero."""

    __tablename__ = "points_postings"
    __table_args__ = (Index("ix_points_postings_account", "account", "subscriber_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    entry_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("points_entries.id"), index=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT)
    account: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)


class PointsLot(Base):
    """Points earned and expiring together; burns and expiry take lots first in, first out."""

    __tablename__ = "points_lots"
    __table_args__ = (
        Index("ix_points_lots_subscriber_expires", "subscriber_id", "expires_at"),
        Index("ix_points_lots_expires_remaining", "expires_at", "remaining"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT)
    entry_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("points_entries.id"), unique=True)
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
