"""Shapes of catalog data crossing the API, the console forms and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from perkflow.catalog.rules import BenefitStatus, Category, FulfilmentKind, ValidityKind
from perkflow.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


class SettlementTerms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cycle: str = Field(default="monthly", description="monthly or quarterly")
    statement_day: int = Field(default=5, description="day of the month the statement is cut")
    payment_days: int = Field(default=30, description="days from statement to payment")


class PartnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=32, description="stable id: lower-case letters, digits, dashes")
    name: str = Field(max_length=128)
    contact_name: str = Field(default="", max_length=64)
    contact_email: str = Field(default="", max_length=128)
    contact_phone: str = Field(default="", max_length=32)
    settlement_terms: SettlementTerms = Field(default_factory=SettlementTerms)
    connector_kind: str = Field(default="none", description="none or http")
    connector_url: str = Field(default="", max_length=255)
    connector_secret: str | None = Field(
        default=None, max_length=256, description="write-only; stored encrypted"
    )
    connector_timeout_ms: int = 3000
    connector_max_attempts: int = 5
    supports_revoke: bool = False


class PartnerUpdate(BaseModel):
    """Only the fields given change; `connector_secret` left out keeps the stored one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=128)
    contact_name: str | None = Field(default=None, max_length=64)
    contact_email: str | None = Field(default=None, max_length=128)
    contact_phone: str | None = Field(default=None, max_length=32)
    settlement_terms: SettlementTerms | None = None
    connector_kind: str | None = None
    connector_url: str | None = Field(default=None, max_length=255)
    connector_secret: str | None = Field(default=None, max_length=256)
    connector_timeout_ms: int | None = None
    connector_max_attempts: int | None = None
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

    code: str = Field(max_length=48, description="stable id: lower-case letters, digits, .-_")
    partner_code: str = Field(max_length=32)
    name_zh: str = Field(max_length=128)
    name_en: str = Field(max_length=128)
    category: Category
    fulfilment_kind: FulfilmentKind
    face_value_fen: int
    cost_price_fen: int
    sale_price_fen: int = Field(description="the one national sale price")
    validity_kind: ValidityKind
    valid_days: int | None = Field(default=None, description="for validity_kind=days")
    valid_from: date | None = Field(default=None, description="for validity_kind=fixed")
    valid_until: date | None = Field(default=None, description="for validity_kind=fixed")
    stock: int | None = Field(
        default=None,
        description="units on sale; null = unlimited; card_code stock comes from imported codes",
    )
    low_stock_threshold: int = 0
    limit_per_month: int | None = Field(default=None, description="per subscriber; null = none")
    limit_total: int | None = Field(default=None, description="per subscriber; null = none")
    revocable: bool = True


class BenefitUpdate(BaseModel):
    """Only the fields given change; null clears a nullable field (stock null = unlimited)."""

    model_config = ConfigDict(extra="forbid")

    name_zh: str | None = Field(default=None, max_length=128)
    name_en: str | None = Field(default=None, max_length=128)
    category: Category | None = None
    face_value_fen: int | None = None
    cost_price_fen: int | None = None
    sale_price_fen: int | None = None
    validity_kind: ValidityKind | None = None
    valid_days: int | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    stock: int | None = None
    low_stock_threshold: int | None = None
    limit_per_month: int | None = None
    limit_total: int | None = None
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
