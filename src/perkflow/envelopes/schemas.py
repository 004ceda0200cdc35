"""Shapes of red-envelope data crossing the API and the console forms."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from perkflow.envelopes.rules import ProgramKind
from perkflow.kit.bounds import COUNT_MAX, Id, Int, Line


class TierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: Int = Field(ge=1, le=20)
    name_zh: Line = Field(min_length=1, max_length=64)
    name_en: Line = Field(min_length=1, max_length=64)
    prize_fen: Int = Field(ge=1, le=100_000_000)
    weight_ppm: Int = Field(ge=1, le=1_000_000)
    max_count: Int | None = Field(default=None, ge=0, le=COUNT_MAX)
    # Pay this tier as a coupon of the batch; prize_fen is then what a win costs the budget.
    prize_batch_id: Id | None = None


class ProgramSpec(BaseModel):
    """A red-envelope programme: a lottery with tiers, or share-to-unlock envelopes."""

    model_config = ConfigDict(extra="forbid")

    code: Line = Field(min_length=3, max_length=48)
    name_zh: Line = Field(min_length=1, max_length=128)
    name_en: Line = Field(min_length=1, max_length=128)
    kind: ProgramKind
    owner_region: Line | None = None
    budget_fen: Int = Field(ge=1, le=10_000_000_000)
    limit_per_subscriber: Int = Field(default=1, ge=1, le=1_000_000)
    tiers: list[TierSpec] = Field(default_factory=list, max_length=20)
    share_amount_fen: Int | None = Field(default=None, ge=1, le=100_000_000)
    helpers_needed: Int | None = Field(default=None, ge=1, le=50)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    seed: Line | None = Field(default=None, min_length=8, max_length=64)


class DrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: Id
    count: Int = Field(default=1, ge=1, le=1000)


class DrawOut(BaseModel):
    draw_no: int
    u: int
    tier: int | None
    outcome: str
    prize_fen: int
    credited: str | None = None  # cash | coupon: where the prize went
    coupon_id: int | None = None
