"""Pure rules of the catalog: categories, fulfilment kinds, lifecycle, prices, validity."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Category(StrEnum):
    VIDEO = "video"
    MUSIC = "music"
    READING = "reading"
    CLOUD_STORAGE = "cloud_storage"
    ECOMMERCE = "ecommerce"
    FOOD_DRINK = "food_drink"
    TRAVEL = "travel"
    TELECOM = "telecom"


class FulfilmentKind(StrEnum):
    DIRECT_RECHARGE = "direct_recharge"
    CARD_CODE = "card_code"
    COUPON = "coupon"
    SERVICE = "service"


class BenefitStatus(StrEnum):
    DRAFT = "draft"
    LISTED = "listed"
    DELISTED = "delisted"


class ValidityKind(StrEnum):
    FIXED = "fixed"
    DAYS = "days"


class CodeStatus(StrEnum):
    AVAILABLE = "available"
    ALLOCATED = "allocated"
    VOID = "void"


# Delisting is reversible (a benefit can come back); a draft never jumps straight to delisted.
LIFECYCLE: dict[BenefitStatus, frozenset[BenefitStatus]] = {
    BenefitStatus.DRAFT: frozenset({BenefitStatus.LISTED}),
    BenefitStatus.LISTED: frozenset({BenefitStatus.DELISTED}),
    BenefitStatus.DELISTED: frozenset({BenefitStatus.LISTED}),
}


def lifecycle_problem(current: BenefitStatus, target: BenefitStatus) -> str | None:
    """Why a benefit cannot move to a status, or None."""
    if target == current:
        return f"benefit is already {current.value}"
    if target not in LIFECYCLE[current]:
        return f"cannot go from {current.value} to {target.value}"
    return None


def price_problem(*, face_value_fen: int, cost_price_fen: int, sale_price_fen: int) -> str | None:
    """Why a price triple is inconsistent, or None."""
    if min(face_value_fen, cost_price_fen, sale_price_fen) < 0:
        return "prices cannot be negative"
    if cost_price_fen > face_value_fen:
        return "cost price cannot exceed face value"
    return None


def valid_until(
    *,
    kind: ValidityKind,
    granted_at: datetime,
    zone: str,
    valid_days: int | None,
    fixed_until: date | None,
) -> datetime:
    """When a grant made at `granted_at` stops being usable: end of the last valid local day."""
    tz = ZoneInfo(zone)
    if kind == ValidityKind.FIXED:
        if fixed_until is None:
            raise ValueError("fixed validity needs an end date")
        last_day = fixed_until
    else:
        if not valid_days or valid_days < 1:
            raise ValueError("validity in days needs a positive number of days")
        last_day = granted_at.astimezone(tz).date() + timedelta(days=valid_days - 1)
    return datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=tz)
