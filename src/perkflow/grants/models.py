"""Ledger tables of grants: the grant, its history, limit counters, the outbox, callbacks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime

_FK_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class Grant(Base):
    """One benefit given to one subscriber; `idempotency_key` makes a retried request a no-op."""

    __tablename__ = "grants"
    __table_args__ = (
        Index("ix_grants_subscriber_status", "subscriber_id", "status"),
        Index("ix_grants_benefit_created", "benefit_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"))
    benefit_id: Mapped[int] = mapped_column(ForeignKey("benefits.id"))
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Where a paused grant goes back to on reactivation.
    paused_from: Mapped[str | None] = mapped_column(String(16), default=None)
    period: Mapped[str] = mapped_column(String(7))
    sale_price_fen: Mapped[int] = mapped_column(Integer)
    cost_price_fen: Mapped[int] = mapped_column(Integer)
    card_code_id: Mapped[int | None] = mapped_column(
        _FK_BIGINT, ForeignKey("card_codes.id"), unique=True, default=None
    )
    partner_order_id: Mapped[str | None] = mapped_column(String(128), default=None)
    failure_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class GrantEvent(Base):
    """One step of a grant's state machine, kept forever."""

    __tablename__ = "grant_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    grant_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("grants.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class GrantCounter(Base):
    """Grants per subscriber, benefit and period (`2026-11` or `total`), bumped conditionally."""

    __tablename__ = "grant_counters"

    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, primary_key=True)
    benefit_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class OutboxMessage(Base):
    """Work for a partner, committed with the grant that caused it (transactional outbox)."""

    __tablename__ = "grant_outbox"
    __table_args__ = (Index("ix_grant_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    grant_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("grants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A worker leases a message; a crashed worker's lease runs out and another picks it up.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    leased_by: Mapped[str | None] = mapped_column(String(64), default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PartnerCallback(Base):
    """A partner's callback as received; its id is unique, so a duplicate is recognised."""

    __tablename__ = "partner_callbacks"
    __table_args__ = (UniqueConstraint("partner_id", "callback_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    callback_id: Mapped[str] = mapped_column(String(128))
    grant_id: Mapped[int | None] = mapped_column(_FK_BIGINT, ForeignKey("grants.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
