"""Shapes of grant data crossing the API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from perkflow.grants.rules import GrantStatus
from perkflow.kit.bounds import Id, Line


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: Id
    benefit_id: Id
    source: Line = Field(default="api", min_length=1, max_length=64)
    idempotency_key: Line | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="or send it as the Idempotency-Key header; the same key returns the same grant",
    )


class GrantEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_status: str | None
    to_status: str
    reason: str
    at: datetime


class GrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    idempotency_key: str
    subscriber_id: int
    benefit_id: int
    partner_id: int
    source: str
    status: GrantStatus
    paused_from: str | None
    period: str
    sale_price_fen: int
    partner_order_id: str | None
    failure_reason: str | None
    valid_until: datetime
    created_at: datetime
    fulfilled_at: datetime | None


class GrantDetail(GrantOut):
    events: list[GrantEventOut]


class GrantPage(BaseModel):
    items: list[GrantOut]
    total: int
    page: int
    size: int


class CallbackIn(BaseModel):
    """A partner's confirmation; the raw body is signed with the partner's shared secret."""

    callback_id: Line = Field(min_length=1, max_length=128, description="unique per partner")
    grant_id: Id
    status: Line = Field(
        description="fulfilled or failed", json_schema_extra={"enum": ["fulfilled", "failed"]}
    )
    order_id: Line | None = None


class CallbackAck(BaseModel):
    grant_id: int
    outcome: str
    duplicate: bool
