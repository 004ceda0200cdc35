"""Ledger tables of coupons and red envelopes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime

_FK_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class CouponBatch(Base):
    """A coupon offer: value, scope, validity, stock, per-subscriber limits and how codes look."""

    __tablename__ = "coupon_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    # CN for a national batch, a province code for a province's own batch.
    owner_region: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    value_kind: Mapped[str] = mapped_column(String(8))
    amount_fen: Mapped[int] = mapped_column(Integer, default=0)
    percent_off: Mapped[int | None] = mapped_column(Integer, default=None)
    cap_fen: Mapped[int | None] = mapped_column(Integer, default=None)
    min_spend_fen: Mapped[int] = mapped_column(Integer, default=0)
    scope_stores: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope_regions: Mapped[list[str]] = mapped_column(JSON, default=list)  # region paths
    scope_partners: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope_categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    validity_kind: Mapped[str] = mapped_column(String(8))
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    valid_days: Mapped[int | None] = mapped_column(Integer, default=None)
    claim_starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claim_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    flash_sale: Mapped[bool] = mapped_column(Boolean, default=False)
    stock_total: Mapped[int] = mapped_column(Integer)
    shard_count: Mapped[int] = mapped_column(Integer)
    limit_total: Mapped[int] = mapped_column(Integer, default=1)
    limit_per_day: Mapped[int | None] = mapped_column(Integer, default=None)
    code_source: Mapped[str] = mapped_column(String(8))
    code_charset: Mapped[str] = mapped_column(String(40))
    code_prefix: Mapped[str] = mapped_column(String(8), default="")
    code_length: Mapped[int] = mapped_column(Integer)
    # Codes in the pool (pattern or import); only the one job of a batch moves it, by CAS.
    pool_size: Mapped[int] = mapped_column(Integer, default=0)
    reversal_window_s: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StockShard(Base):
    """A slice of a batch's stock: claims spread over shards instead of queueing on one row.

    A shard hands out the slots `slot_base .. slot_base+size-1` upwards; `coupons` is unique on
    (batch, slot), so even a bug in the counting could not give one unit twice.
    """

    __tablename__ = "coupon_stock_shards"
    __table_args__ = (CheckConstraint("remaining >= 0 AND remaining <= size", name="remaining"),)

    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot_base: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)


class PoolCode(Base):
    """A pre-made code of a batch (generated or imported); claim slot n takes ordinal n."""

    __tablename__ = "coupon_codes"
    __table_args__ = (UniqueConstraint("batch_id", "ordinal"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id"))
    ordinal: Mapped[int] = mapped_column(Integer)
    # Keyed hash for lookup, AES-GCM for display: a leaked table redeems nothing.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_enc: Mapped[bytes] = mapped_column(LargeBinary)


class CodeJob(Base):
    """Generating or importing a batch's codes in chunks; `done`/`cursor` make it resumable."""

    __tablename__ = "coupon_code_jobs"
    __table_args__ = (
        # One live job per batch: two jobs appending ordinals at once would interleave.
        Index(
            "ux_coupon_code_jobs_live",
            "batch_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    # Next input of the batch's code permutation (skipped collisions make it run ahead of done).
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    collisions: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Coupon(Base):
    """One claimed coupon in a subscriber's wallet; the idempotency key makes a retry a no-op."""

    __tablename__ = "coupons"
    __table_args__ = (
        UniqueConstraint("batch_id", "slot"),
        Index("ix_coupons_subscriber_status", "subscriber_id", "status"),
        Index("ix_coupons_batch_claimed", "batch_id", "claimed_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id"))
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("subscribers.id"))
    slot: Mapped[int] = mapped_column(Integer)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    status: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(8))
    device_id: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ClaimCounter(Base):
    """Claims per subscriber and batch, for the total (`total`) and per local day (`2026-11-23`)."""

    __tablename__ = "coupon_claim_counters"

    batch_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class RateBucket(Base):
    """Claim attempts of one subscriber or device in one fixed window (UNLOGGED on PostgreSQL)."""

    __tablename__ = "coupon_rate_buckets"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class Redemption(Base):
    """A coupon used at a store or partner (核销); reversible within the batch's window."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (
        # At most one standing redemption per coupon, whatever the code above does.
        Index(
            "ux_coupon_redemptions_done",
            "coupon_id",
            unique=True,
            sqlite_where=text("status = 'done'"),
            postgresql_where=text("status = 'done'"),
        ),
        Index("ix_coupon_redemptions_store_at", "store_code", "at"),
        Index("ix_coupon_redemptions_batch_at", "batch_id", "at"),
        UniqueConstraint("store_code", "client_ref"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("coupons.id"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id"))
    store_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"), default=None)
    partner_code: Mapped[str | None] = mapped_column(String(32), default=None)
    category: Mapped[str | None] = mapped_column(String(24), default=None)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(8))  # counter | offline | api
    # The store's own reference of an offline entry: an upload sent twice records it once.
    client_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    order_fen: Mapped[int] = mapped_column(Integer)
    discount_fen: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())  # when the clerk took it
    at: Mapped[datetime] = mapped_column(UTCDateTime())  # when the ledger accepted it
    status: Mapped[str] = mapped_column(String(10))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    reversed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    reverse_reason: Mapped[str | None] = mapped_column(String(255), default=None)


__all__ = [
    "ClaimCounter",
    "CodeJob",
    "Coupon",
    "CouponBatch",
    "PoolCode",
    "RateBucket",
    "Redemption",
    "StockShard",
]
