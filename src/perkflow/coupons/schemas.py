"""Shapes of coupon and red-envelope data crossing the API and the console forms."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from perkflow.coupons.rules import BatchStatus, CodeSource, CouponValidity, ValueKind
from perkflow.kit.bounds import Id, Int, Line, Text


class BatchSpec(BaseModel):
    """Everything that defines a coupon batch; the console editor and the API both send this."""

    model_config = ConfigDict(extra="forbid")

    code: Line = Field(min_length=3, max_length=48)
    name_zh: Line = Field(min_length=1, max_length=128)
    name_en: Line = Field(min_length=1, max_length=128)
    owner_region: Line | None = Field(default=None, description="CN or a province; default yours")
    value_kind: ValueKind = ValueKind.AMOUNT
    amount_fen: Int = Field(default=0, ge=0, le=100_000_000)
    percent_off: Int | None = Field(default=None, ge=1, le=99)
    cap_fen: Int | None = Field(default=None, ge=1, le=100_000_000)
    min_spend_fen: Int = Field(default=0, ge=0, le=100_000_000)
    scope_stores: list[Line] = Field(default_factory=list, max_length=500)
    scope_regions: list[Line] = Field(default_factory=list, max_length=100)
    scope_partners: list[Line] = Field(default_factory=list, max_length=100)
    scope_categories: list[Line] = Field(default_factory=list, max_length=20)
    validity_kind: CouponValidity = CouponValidity.DAYS
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    valid_days: Int | None = Field(default=30, ge=1, le=3650)
    claim_starts_at: datetime | None = None
    claim_ends_at: datetime | None = None
    flash_sale: bool = False
    stock_total: Int = Field(ge=1, le=50_000_000)
    shard_count: Int | None = Field(default=None, ge=1, le=256)
    limit_total: Int = Field(default=1, ge=1, le=1000)
    limit_per_day: Int | None = Field(default=None, ge=1, le=1000)
    code_source: CodeSource = CodeSource.AUTO
    code_charset: Line = Field(default="alnum", min_length=2, max_length=40)
    code_prefix: Line = Field(default="", max_length=8)
    code_length: Int = Field(default=10, ge=4, le=24)
    reversal_window_s: Int | None = Field(default=None, ge=0, le=7 * 86400)


class BatchWarningOut(BaseModel):
    """A reason the batch's coupons may have nowhere to be redeemed (its scope, as saved)."""

    field: str
    message: str


class BatchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name_zh: str
    name_en: str
    owner_region: str
    value_kind: str
    amount_fen: int
    percent_off: int | None
    cap_fen: int | None
    min_spend_fen: int
    validity_kind: str
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    claim_starts_at: datetime
    claim_ends_at: datetime | None
    flash_sale: bool
    stock_total: int
    shard_count: int
    limit_total: int
    limit_per_day: int | None
    code_source: str
    pool_size: int
    status: str
    # Answered by create: what in the scope leaves nobody to redeem (empty when someone can).
    warnings: list[BatchWarningOut] = []


class StockOut(BaseModel):
    batch_id: int
    total: int
    remaining: int
    claimed: int
    redeemed: int
    shards: list[int]


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Line = Field(json_schema_extra={"enum": [s.value for s in BatchStatus]})


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: Id
    idempotency_key: Line = Field(min_length=8, max_length=128)


class ClaimOut(BaseModel):
    coupon_id: int
    batch_id: int
    subscriber_id: int
    replayed: bool
    valid_until: datetime


class WalletItemOut(BaseModel):
    coupon_id: int
    batch_id: int
    name_zh: str
    name_en: str
    status: str
    code: str
    valid_from: datetime
    valid_until: datetime


class RedeemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Line = Field(min_length=4, max_length=48)
    order_fen: Int = Field(ge=0, le=100_000_000)
    category: Line | None = Field(default=None, max_length=24)


class RedemptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    coupon_id: int
    batch_id: int
    store_code: str | None
    partner_code: str | None
    order_fen: int
    discount_fen: int
    status: str
    source: str
    at: datetime


class ReverseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=1, max_length=255)


class OfflineEntry(BaseModel):
    """One redemption a store took while offline."""

    model_config = ConfigDict(extra="forbid")

    client_ref: Line = Field(min_length=1, max_length=64)
    code: Line = Field(min_length=4, max_length=48)
    order_fen: Int = Field(ge=0, le=100_000_000)
    recorded_at: datetime
    category: Line | None = Field(default=None, max_length=24)


class OfflineBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[OfflineEntry] = Field(min_length=1, max_length=2000)


class OfflineResultOut(BaseModel):
    client_ref: str
    ok: bool
    redemption_id: int | None = None
    reason: str | None = None
    message: str | None = None


class StockAdditionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Int = Field(ge=1, le=50_000_000)
