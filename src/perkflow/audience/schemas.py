"""Shapes of audience data crossing the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from perkflow.audience.rules import LIST_KINDS
from perkflow.kit.bounds import COUNT_MAX, Document, Id, Int, Line, Text


class DefinitionIn(BaseModel):
    """A definition to count or validate: `rule` and `exclude` as in docs/audience.md."""

    model_config = ConfigDict(extra="forbid")

    definition: Document
    as_of: datetime | None = None


class CountOut(BaseModel):
    count: int
    by_province: dict[str, int]


class PreviewOut(CountOut):
    by_plan_fee: dict[int, int]
    by_activity: dict[str, int]
    seconds: float


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Line = Field(min_length=1, max_length=120)
    description: Text = Field(default="", max_length=2000)
    definition: Document


class SegmentVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: Document
    expected_version: Int | None = Field(default=None, ge=1, le=COUNT_MAX)
    name: Line | None = Field(default=None, min_length=1, max_length=120)
    description: Text | None = Field(default=None, max_length=2000)


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    province_code: str | None
    latest_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class SegmentVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    segment_id: int
    version: int
    definition: dict[str, Any]
    created_by: str
    created_at: datetime


class TargetListCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment_id: Id
    version: Int | None = Field(default=None, ge=1, le=COUNT_MAX)
    channel: Line = "sms"
    control_share: float = Field(default=0.1, ge=0, le=0.5, description="0.1 is 10 %")
    send_at: datetime | None = None
    salt: Line | None = Field(default=None, max_length=64)
    name: Line | None = Field(default=None, max_length=120)


class TargetListOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    segment_id: int
    segment_version: int
    province_code: str | None
    channel: str
    send_at: datetime
    control_share_bp: int
    salt: str
    universal_period: int
    universal_share_bp: int
    status: str
    members: int
    target: int
    control: int
    universal_control: int
    suppressed: int
    reasons: dict[str, int]
    by_province: dict[str, dict[str, int]]
    mart_table: str
    built_by: str
    built_at: datetime
    seconds: float | None


class TargetListPage(BaseModel):
    items: list[TargetListOut]
    total: int


class ContactListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: Id
    kind: Line = Field(default="opted_out", json_schema_extra={"enum": list(LIST_KINDS)})
    channel: Line = "all"
    source: Line = Field(default="api", max_length=16)
    note: Text = Field(default="", max_length=255)


class ContactListOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    subscriber_id: int
    kind: str
    channel: str
    source: str
    note: str
    created_by: str
    created_at: datetime


class ContactListPage(BaseModel):
    items: list[ContactListOut]
    total: int


class UniversalControlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: float = Field(ge=0, le=0.5, description="0.05 is 5 %")
    rotation_days: Int = Field(ge=7, le=730)
    salt: Line | None = Field(default=None, max_length=64)
    started_on: date | None = None


class UniversalControlOut(BaseModel):
    share_bp: int
    rotation_days: int
    started_on: date
    period: int
    first_day: date
    last_day: date
    size: int
    population: int
    by_province: dict[str, int]


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    body: dict[str, Any]
    created_by: str
    updated_at: datetime
