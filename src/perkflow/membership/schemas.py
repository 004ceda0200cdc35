"""Shapes of membership data crossing the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from perkflow.kit.bounds import FEN_MAX, Int, Line, Text


class BundleItemOut(BaseModel):
    id: int
    benefit_code: str
    name_zh: str
    name_en: str
    mode: str
    cadence: str
    quantity: int
    value_fen: int
    pick_group: str | None
    choose: int


class TierOut(BaseModel):
    code: str
    name_zh: str
    name_en: str
    level: int
    points_multiplier: float
    qualify: list[list[dict[str, Any]]]
    annual_value_fen: int = Field(description="the stated value of the bundle in a year")
    bundle: list[BundleItemOut]


class PreviewRowOut(BaseModel):
    code: str
    level: int
    subscribers: int


class PreviewOut(BaseModel):
    tiers: list[PreviewRowOut]
    no_tier: int


class PrepaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_fen: Int = Field(
        description="positive: prepaid; negative: prepaid money used", ge=-FEN_MAX, le=FEN_MAX
    )
    idempotency_key: Line = Field(min_length=1, max_length=128)
    reason: Text = Field(default="prepayment", max_length=255)


class PrepaymentOut(BaseModel):
    balance_fen: int
    replayed: bool
    tier: str | None


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_fee_fen: Int = Field(ge=0, le=10_000_000)
    reason: Text = Field(default="plan change", max_length=255)


class BillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bill_ref: Line = Field(min_length=1, max_length=100, description="the bill's id; once per bill")
    bill_fen: Int = Field(ge=0, le=100_000_000)


class PointsEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    points: int
    reason: str
    ref: str | None
    details: dict[str, Any]
    at: datetime


class PointsOut(BaseModel):
    entry: PointsEntryOut | None
    replayed: bool
    balance: int


class TierChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    from_tier_id: int | None
    to_tier_id: int | None
    reason: str
    source: str
    at: datetime


class ExpiringOut(BaseModel):
    on: date
    points: int


class MemberOut(BaseModel):
    subscriber_id: int
    status: str
    tier: str | None
    pending_tier: str | None
    downgrade_due_at: datetime | None
    next_tier: str | None
    progress: float | None
    annual_value_fen: int
    used_value_fen: int
    points: int
    points_value_fen: int
    expiring: list[ExpiringOut]
    entries: list[PointsEntryOut]
    history: list[TierChangeOut]


class LiabilityOut(BaseModel):
    members: int
    points: int
    value_fen: int
    by_expiry: list[dict[str, Any]]
    accounts: dict[str, int]
