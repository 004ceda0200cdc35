"""Ledger tables of the subscriber master."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime


class Subscriber(Base):
    """A phone number's account; the number itself is only stored encrypted and keyed-hashed."""

    __tablename__ = "subscribers"
    __table_args__ = (Index("ix_subscribers_province_status", "province_code", "status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    phone_enc: Mapped[bytes] = mapped_column(LargeBinary)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    province_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    city_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    plan_fee_fen: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    joined_on: Mapped[date] = mapped_column(Date)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StatusEvent(Base):
    """One status change, kept forever: the history behind `Subscriber.status`."""

    __tablename__ = "subscriber_status_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("subscribers.id"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    actor_name: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class H5LinkNonce(Base):
    """An issued one-click link not used yet: using it deletes the row, so a link works once."""

    __tablename__ = "h5_link_nonces"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("subscribers.id"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
