"""Ledger tables of the catalog: partners, benefits, card-code lots and codes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime


class Partner(Base):
    """A supplier of benefits, how we reach it and how we settle with it."""

    __tablename__ = "partners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    contact_name: Mapped[str] = mapped_column(String(64), default="")
    contact_email: Mapped[str] = mapped_column(String(128), default="")
    contact_phone: Mapped[str] = mapped_column(String(32), default="")
    # e.g. {"cycle": "monthly", "statement_day": 5, "payment_days": 30}
    settlement_terms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    connector_kind: Mapped[str] = mapped_column(String(16), default="none")  # none | http
    connector_url: Mapped[str] = mapped_column(String(255), default="")
    # Shared secret for signing requests and verifying callbacks, encrypted at rest.
    connector_secret_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    connector_timeout_ms: Mapped[int] = mapped_column(Integer, default=3000)
    connector_max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    supports_revoke: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Benefit(Base):
    """A benefit SKU with one national sale price; stock and limits enforced atomically."""

    __tablename__ = "benefits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(24), index=True)
    fulfilment_kind: Mapped[str] = mapped_column(String(24))
    face_value_fen: Mapped[int] = mapped_column(Integer)
    cost_price_fen: Mapped[int] = mapped_column(Integer)
    sale_price_fen: Mapped[int] = mapped_column(Integer)
    validity_kind: Mapped[str] = mapped_column(String(8))
    valid_days: Mapped[int | None] = mapped_column(Integer, default=None)
    valid_from: Mapped[date | None] = mapped_column(Date, default=None)
    valid_until: Mapped[date | None] = mapped_column(Date, default=None)
    # NULL stock means unlimited; for card_code benefits stock is the count of available codes.
    stock_total: Mapped[int | None] = mapped_column(Integer, default=None)
    stock_remaining: Mapped[int | None] = mapped_column(Integer, default=None)
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=0)
    limit_per_month: Mapped[int | None] = mapped_column(Integer, default=None)
    limit_total: Mapped[int | None] = mapped_column(Integer, default=None)
    revocable: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CardCodeLot(Base):
    """One imported file of a partner's card codes, with what it cost."""

    __tablename__ = "card_code_lots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    benefit_id: Mapped[int] = mapped_column(ForeignKey("benefits.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    unit_cost_fen: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
    imported_by: Mapped[str] = mapped_column(String(128))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CardCode(Base):
    """One card code (卡密), encrypted at rest; `grants.card_code_id` is unique: one grant each."""

    __tablename__ = "card_codes"
    __table_args__ = (
        UniqueConstraint("benefit_id", "code_hash"),
        Index("ix_card_codes_benefit_status", "benefit_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("card_code_lots.id"), index=True)
    benefit_id: Mapped[int] = mapped_column(ForeignKey("benefits.id"))
    code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    pin_enc: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_on: Mapped[date | None] = mapped_column(Date, default=None)
    status: Mapped[str] = mapped_column(String(16), default="available")
    allocated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
