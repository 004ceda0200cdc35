"""Shapes of subscriber data crossing the API."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from perkflow.kit.bounds import Text
from perkflow.subscribers.rules import Status


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    reason: Text = Field(min_length=1, max_length=255)


class SubscriberOut(BaseModel):
    id: int
    phone: str = Field(description="masked (138****1234) unless revealed by a role allowed to")
    province_code: str
    city_code: str
    plan_fee_fen: int
    status: Status
    joined_on: date
    status_changed_at: datetime


class StatusEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_status: str | None
    to_status: str
    reason: str
    source: str
    actor_name: str
    at: datetime


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    total: int
    page: int
    size: int
