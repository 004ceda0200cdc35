"""Shapes of catalog data crossing the API, the console forms and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from perkflow.catalog.rules import (
    CONNECTOR_KINDS,
    SETTLEMENT_CYCLES,
    BenefitStatus,
    Category,
    FulfilmentKind,
    ValidityKind,
)
from perkflow.errors import ValidationFailed
from perkflow.kit.bounds import COUNT_MAX, FEN_MAX, Int, Line

M = TypeVar("M", bound=BaseModel)


class SettlementTerms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cycle: Line = Field(
        default="monthly",
        description="monthly or quarterly",
        json_schema_extra={"enum": list(SETTLEMENT_CYCLES)},
    )
    statement_day: Int = Field(
        default=5, description="day of the month the statement is cut", ge=-COUNT_MAX, le=COUNT_MAX
    )
    payment_days: Int = Field(
        default=30, description="days from statement to payment", ge=-COUNT_MAX, le=COUNT_MAX
    )


class PartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Line = Field(max_length=32, description="stable id: lower-case letters, digits, dashes")
    name: Line = Field(max_length=128)
    contact_name: Line = Field(default="", max_length=64)
    contact_email: Line = Field(default="", max_length=128)
    contact_phone: Line = Field(default="", max_length=32)
    settlement_terms: SettlementTerms = Field(default_factory=SettlementTerms)
    connector_kind: Line = Field(
        default="none",
        description="none or http",
        json_schema_extra={"enum": list(CONNECTOR_KINDS)},
    )
    connector_url: Line = Field(default="", max_length=255)
    connector_secret: Line | None = Field(
        default=None, max_length=256, description="write-only; stored encrypted"
    )
    connector_timeout_ms: Int = Field(default=3000, ge=-COUNT_MAX, le=COUNT_MAX)
    connector_max_attempts: Int = Field(default=5, ge=-COUNT_MAX, le=COUNT_MAX)
    supports_revoke: bool = False


class PartnerUpdate(BaseModel):
    """Only the fields given change; `connector_secret` left out keeps the stored one."""

    model_config = ConfigDict(extra="forbid")

    name: Line | None = Field(default=None, max_length=128)
    contact_name: Line | None = Field(default=None, max_length=64)
    contact_email: Line | None = Field(default=None, max_length=128)
    contact_phone: Line | None = Field(default=None, max_length=32)
    settlement_terms: SettlementTerms | None = None
    connector_kind: Line | None = Field(
        default=None, json_schema_extra={"enum": [*CONNECTOR_KINDS, None]}
    )
    connector_url: Line | None = Field(default=None, max_length=255)
    connector_secret: Line | None = Field(default=None, max_length=256)
    connector_timeout_ms: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    connector_max_attempts: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    supports_revoke: bool | None = None


class PartnerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    contact_name: str
    contact_email: str
    contact_phone: str
    settlement_terms: dict[str, Any]
    connector_kind: str
    connector_url: str
    has_connector_secret: bool
    connector_timeout_ms: int
    connector_max_attempts: int
    supports_revoke: bool
    created_at: datetime


class BenefitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Line = Field(max_length=48, description="stable id: lower-case letters, digits, .-_")
    partner_code: Line = Field(max_length=32)
    name_zh: Line = Field(max_length=128)
    name_en: Line = Field(max_length=128)
    category: Category
    fulfilment_kind: FulfilmentKind
    face_value_fen: Int = Field(ge=-FEN_MAX, le=FEN_MAX)
    cost_price_fen: Int = Field(ge=-FEN_MAX, le=FEN_MAX)
    sale_price_fen: Int = Field(description="the one national sale price", ge=-FEN_MAX, le=FEN_MAX)
    validity_kind: ValidityKind
    valid_days: Int | None = Field(
        default=None, description="for validity_kind=days", ge=-COUNT_MAX, le=COUNT_MAX
    )
    valid_from: date | None = Field(default=None, description="for validity_kind=fixed")
    valid_until: date | None = Field(default=None, description="for validity_kind=fixed")
    stock: Int | None = Field(
        default=None,
        description="units on sale; null = unlimited; card_code stock comes from imported codes",
        ge=-COUNT_MAX,
        le=COUNT_MAX,
    )
    low_stock_threshold: Int = Field(default=0, ge=-COUNT_MAX, le=COUNT_MAX)
    limit_per_month: Int | None = Field(
        default=None, description="per subscriber; null = none", ge=-COUNT_MAX, le=COUNT_MAX
    )
    limit_total: Int | None = Field(
        default=None, description="per subscriber; null = none", ge=-COUNT_MAX, le=COUNT_MAX
    )
    revocable: bool = True


class BenefitUpdate(BaseModel):
    """Only the fields given change; null clears a nullable field (stock null = unlimited)."""

    model_config = ConfigDict(extra="forbid")

    name_zh: Line | None = Field(default=None, max_length=128)
    name_en: Line | None = Field(default=None, max_length=128)
    category: Category | None = None
    face_value_fen: Int | None = Field(default=None, ge=-FEN_MAX, le=FEN_MAX)
    cost_price_fen: Int | None = Field(default=None, ge=-FEN_MAX, le=FEN_MAX)
    sale_price_fen: Int | None = Field(default=None, ge=-FEN_MAX, le=FEN_MAX)
    validity_kind: ValidityKind | None = None
    valid_days: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    valid_from: date | None = None
    valid_until: date | None = None
    stock: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    low_stock_threshold: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    limit_per_month: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    limit_total: Int | None = Field(default=None, ge=-COUNT_MAX, le=COUNT_MAX)
    revocable: bool | None = None


class BenefitStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: BenefitStatus


class BenefitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    partner_id: int
    partner_code: str
    name_zh: str
    name_en: str
    category: Category
    fulfilment_kind: FulfilmentKind
    face_value_fen: int
    cost_price_fen: int
    sale_price_fen: int
    validity_kind: ValidityKind
    valid_days: int | None
    valid_from: date | None
    valid_until: date | None
    stock_total: int | None
    stock_remaining: int | None
    low_stock_threshold: int
    low_stock: bool
    limit_per_month: int | None
    limit_total: int | None
    revocable: bool
    status: BenefitStatus
    created_at: datetime
    updated_at: datetime


class BenefitPage(BaseModel):
    items: list[BenefitOut]
    total: int
    page: int
    size: int


class LotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    benefit_id: int
    file_name: str
    unit_cost_fen: int
    count: int
    imported_by: str
    imported_at: datetime


def parse_input(model: type[M], data: Mapping[str, Any]) -> M:
    """A schema from form or CLI values; a bad value is a 422 naming its field."""
    try:
        return model.model_validate(dict(data))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(f"{field}: {first['msg']}", field=field) from exc
