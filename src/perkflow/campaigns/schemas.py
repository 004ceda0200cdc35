"""Shapes of campaign data crossing the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from perkflow.campaigns.rules import EVENT_TYPES, RESPONSE_KINDS
from perkflow.kit.bounds import FEN_MAX, Attributes, Id, Int, Line, Text


class CampaignWarning(BaseModel):
    """Something the campaign was saved with that will stop it later (an unconfigured channel)."""

    field: str
    channel: str
    setting: str
    message: str


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    # An imported campaign's outside source: the id space of its history (docs/insights.md).
    import_source: str | None = None
    status: str
    version: int
    province_code: str | None
    segment_id: int | None
    goal: dict[str, Any]
    offer: dict[str, Any]
    variants: list[dict[str, Any]]
    schedule: dict[str, Any]
    throttle: dict[str, Any]
    trigger: dict[str, Any] | None
    control_share_bp: int
    test_share_bp: int
    budget_fen: int | None
    stock_cap: int | None
    target_list_id: int | None
    created_by: str
    submitted_by: str | None
    approved_by: str | None
    created_at: datetime
    updated_at: datetime
    # Answered by create: what this installation lacks to run the campaign (empty otherwise).
    warnings: list[CampaignWarning] = []
    # Answered by get: what the split can detect (insights.presentation.power_plan), or None.
    power: dict[str, Any] | None = None


class WaveOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str
    share_bp: int
    planned: int
    started_at: datetime | None
    finished_at: datetime | None


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text = Field(default="", max_length=500)


class RolloutIn(Note):
    # Roll out although the gate refuses (window open, no sequential evidence): needs a note,
    # and the audit records the decision as taken against the evidence.
    against_evidence: bool = False


class FailureOut(BaseModel):
    contact_id: int
    subscriber_id: int
    channel: str
    attempts: int
    error: str | None


class WaveProgressOut(BaseModel):
    wave_id: int
    kind: str
    status: str
    share_bp: int
    planned: int
    open: int
    by_status: dict[str, int]
    sent_by_channel: dict[str, int]
    suppressed: dict[str, int]
    failures: list[FailureOut]


class ProgressOut(BaseModel):
    campaign_id: int
    status: str
    target_list_id: int | None
    suppressed: dict[str, int]
    waves: list[WaveProgressOut]


class ResponseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscriber_id: Id
    kind: Line = Field(
        description=f"one of {', '.join(RESPONSE_KINDS)}",
        json_schema_extra={"enum": list(RESPONSE_KINDS)},
    )
    occurred_at: datetime = Field(description="with a time zone offset")
    value_fen: Int = Field(default=0, ge=0, le=FEN_MAX)
    ref: Line | None = Field(default=None, max_length=64, description='e.g. "coupon_batch:12"')
    idempotency_key: Line | None = Field(default=None, min_length=1, max_length=160)


class ResponseOut(BaseModel):
    recorded: bool
    response_id: int | None = None
    campaign_id: int | None = None
    contact_id: int | None = None
    cell: str | None = None
    variant: str | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Line = Field(
        description=f"one of {', '.join(EVENT_TYPES)}",
        json_schema_extra={"enum": list(EVENT_TYPES)},
    )
    subscriber_id: Id
    occurred_at: datetime
    attributes: Attributes = Field(default_factory=dict)
    idempotency_key: Line | None = Field(default=None, min_length=1, max_length=128)


class TriggeredOut(BaseModel):
    campaign_id: int
    contact_id: int | None
    cell: str | None
    status: str
    reason: str | None


class EventOut(BaseModel):
    event_id: int
    replayed: bool
    triggered: list[TriggeredOut]
