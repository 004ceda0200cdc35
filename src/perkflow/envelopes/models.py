"""Ledger tables of red envelopes: lottery programmes, share-to-unlock envelopes, credits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime

_FK_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class EnvelopeProgram(Base):
    """A red-envelope programme: a lottery pool with prize tiers, or share-to-unlock envelopes."""

    __tablename__ = "envelope_programs"
    __table_args__ = (
        # The budget cap lives in the database too: no code path can pay past it.
        CheckConstraint("spent_fen >= 0 AND spent_fen <= budget_fen", name="budget"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))
    owner_region: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    budget_fen: Mapped[int] = mapped_column(BigInteger)
    spent_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    # Lottery: the logged seed and the number of draws made; draw n is f(seed, n).
    seed: Mapped[str] = mapped_column(String(64))
    draws: Mapped[int] = mapped_column(BigInteger, default=0)
    limit_per_subscriber: Mapped[int] = mapped_column(Integer)
    share_amount_fen: Mapped[int | None] = mapped_column(Integer, default=None)
    helpers_needed: Mapped[int | None] = mapped_column(Integer, default=None)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    status: Mapped[str] = mapped_column(String(8))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EnvelopeTier(Base):
    """A prize tier of a lottery; `won_count` never passes `max_count`."""

    __tablename__ = "envelope_tiers"

    program_id: Mapped[int] = mapped_column(ForeignKey("envelope_programs.id"), primary_key=True)
    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(64))
    name_en: Mapped[str] = mapped_column(String(64))
    prize_fen: Mapped[int] = mapped_column(Integer)
    weight_ppm: Mapped[int] = mapped_column(Integer)
    max_count: Mapped[int | None] = mapped_column(Integer, default=None)
    won_count: Mapped[int] = mapped_column(Integer, default=0)
    # A coupon batch the tier pays out (one coupon per win); None = cash of prize_fen. For a
    # coupon tier prize_fen is what a win costs the budget (typically the coupon's face value).
    prize_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("coupon_batches.id"), default=None
    )


class EnvelopeDraw(Base):
    """One lottery draw, with what is needed to recompute it: the draw number and its value."""

    __tablename__ = "envelope_draws"
    __table_args__ = (
        UniqueConstraint("program_id", "draw_no"),
        Index("ix_envelope_draws_subscriber", "subscriber_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("envelope_programs.id"))
    draw_no: Mapped[int] = mapped_column(BigInteger)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"))
    u: Mapped[int] = mapped_column(Integer)
    tier: Mapped[int | None] = mapped_column(Integer, default=None)
    outcome: Mapped[str] = mapped_column(String(16))
    prize_fen: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class EnvelopeCounter(Base):
    """Draws (lottery) or envelopes (share) per subscriber and programme, bumped conditionally."""

    __tablename__ = "envelope_counters"

    program_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class ShareEnvelope(Base):
    """A subscriber's share-to-unlock envelope: opens when `helpers_needed` friends helped."""

    __tablename__ = "share_envelopes"
    __table_args__ = (
        UniqueConstraint("program_id", "owner_id"),
        CheckConstraint("helpers_count <= helpers_needed", name="helpers"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("envelope_programs.id"))
    owner_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(Integer)
    helpers_needed: Mapped[int] = mapped_column(Integer)
    helpers_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class EnvelopeCredit(Base):
    """A red-envelope prize credited to its subscriber: cash to their balance, or a coupon."""

    # One row per won draw or opened envelope: the unique constraints make crediting idempotent.

    __tablename__ = "envelope_credits"
    __table_args__ = (
        UniqueConstraint("program_id", "draw_no"),
        UniqueConstraint("envelope_id"),
        CheckConstraint("(draw_no IS NULL) <> (envelope_id IS NULL)", name="one_source"),
        CheckConstraint("(kind = 'coupon') = (coupon_id IS NOT NULL)", name="coupon"),
        Index("ix_envelope_credits_subscriber", "subscriber_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"))
    program_id: Mapped[int] = mapped_column(ForeignKey("envelope_programs.id"))
    draw_no: Mapped[int | None] = mapped_column(BigInteger, default=None)
    envelope_id: Mapped[int | None] = mapped_column(
        _FK_BIGINT, ForeignKey("share_envelopes.id"), default=None
    )
    kind: Mapped[str] = mapped_column(String(8))  # cash | coupon
    amount_fen: Mapped[int] = mapped_column(Integer)
    coupon_id: Mapped[int | None] = mapped_column(
        _FK_BIGINT, ForeignKey("coupons.id"), default=None
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class ShareHelp(Base):
    """A friend's help; `via_id` is whose link they came through, so chains can be reviewed."""

    __tablename__ = "share_helps"
    __table_args__ = (
        UniqueConstraint("envelope_id", "helper_id"),
        CheckConstraint("helper_id <> owner_id", name="not_self"),
        Index("ix_share_helps_device", "device_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    envelope_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("share_envelopes.id"))
    owner_id: Mapped[int] = mapped_column(_FK_BIGINT)
    helper_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"), index=True)
    via_id: Mapped[int] = mapped_column(_FK_BIGINT)
    device_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


__all__ = [
    "EnvelopeCounter",
    "EnvelopeCredit",
    "EnvelopeDraw",
    "EnvelopeProgram",
    "EnvelopeTier",
    "ShareEnvelope",
    "ShareHelp",
]
