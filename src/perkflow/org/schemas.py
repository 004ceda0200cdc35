"""Shapes of organisation data crossing the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from perkflow.kit.bounds import Line
from perkflow.org.rules import Role


class StaffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Line = Field(min_length=3, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    display_name: Line = Field(min_length=1, max_length=128)
    password: Line = Field(min_length=10, max_length=256)
    role: Role
    region_code: Line = Field(min_length=2, max_length=32)


class StaffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    role: str
    region_code: str
    is_active: bool


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_kind: str
    actor_name: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    ip: str


class RegionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    parent_code: str | None
    level: str
    name_zh: str
    name_en: str
