"""Pure rules of the catalog: categories, fulfilment kinds, lifecycle, prices, validity."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from urllib.parse import urlsplit
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


# (field, reason): every refusal names the field a person has to correct.
Issue = tuple[str, str]

# ¥1,000,000 per unit and two billion units keep every figure inside a 32-bit column.
MAX_PRICE_FEN = 100_000_000
MAX_COUNT = 2_000_000_000
MAX_VALID_DAYS = 3650
BENEFIT_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,47}$")
PARTNER_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
CONNECTOR_KINDS = ("none", "http")
SETTLEMENT_CYCLES = ("monthly", "quarterly")


def code_issue(code: str, *, field: str, pattern: re.Pattern[str]) -> Issue | None:
    """Why a benefit or partner code is malformed, or None."""
    if not pattern.fullmatch(code):
        return field, "use lower-case letters, digits and dashes, starting with a letter or digit"
    return None


def price_issue(*, face_value_fen: int, cost_price_fen: int, sale_price_fen: int) -> Issue | None:
    """The field and reason of an inconsistent price triple, or None."""
    for name, value in (
        ("face_value_fen", face_value_fen),
        ("cost_price_fen", cost_price_fen),
        ("sale_price_fen", sale_price_fen),
    ):
        if value < 0:
            return name, "a price cannot be negative"
        if value > MAX_PRICE_FEN:
            return name, "a price cannot exceed ¥1,000,000"
    problem = price_problem(
        face_value_fen=face_value_fen, cost_price_fen=cost_price_fen, sale_price_fen=sale_price_fen
    )
    return ("cost_price_fen", problem) if problem else None


def validity_issue(
    *,
    kind: ValidityKind,
    valid_days: int | None,
    valid_from: date | None,
    valid_until: date | None,
) -> Issue | None:
    """Why a validity setting is incomplete or contradictory, or None."""
    if kind == ValidityKind.DAYS:
        if valid_days is None or not 1 <= valid_days <= MAX_VALID_DAYS:
            return "valid_days", f"give a number of days from 1 to {MAX_VALID_DAYS}"
        if valid_from is not None or valid_until is not None:
            return "valid_until", "validity in days takes no fixed dates"
        return None
    if valid_until is None:
        return "valid_until", "fixed validity needs an end date"
    if valid_from is not None and valid_from > valid_until:
        return "valid_until", "the end date is before the start date"
    if valid_days is not None:
        return "valid_days", "fixed validity takes no number of days"
    return None


def stock_issue(*, stock: int | None, low_stock_threshold: int) -> Issue | None:
    """Why a stock setting is impossible, or None (None stock means unlimited)."""
    if stock is not None and not 0 <= stock <= MAX_COUNT:
        return "stock", "stock is a whole number of units, zero or more"
    if not 0 <= low_stock_threshold <= MAX_COUNT:
        return "low_stock_threshold", "the threshold is a whole number, zero or more"
    return None


def limits_issue(*, limit_per_month: int | None, limit_total: int | None) -> Issue | None:
    """Why per-subscriber limits contradict each other, or None (None means no limit)."""
    for name, value in (("limit_per_month", limit_per_month), ("limit_total", limit_total)):
        if value is not None and not 1 <= value <= MAX_COUNT:
            return name, "a limit is at least 1; leave it empty for no limit"
    if limit_per_month is not None and limit_total is not None and limit_per_month > limit_total:
        return "limit_per_month", "the monthly limit cannot exceed the total limit"
    return None


def listing_issue(*, kind: ValidityKind, valid_until: date | None, today: date) -> Issue | None:
    """Why a benefit cannot be listed today, or None."""
    if kind == ValidityKind.FIXED and valid_until is not None and valid_until < today:
        return "valid_until", "its fixed validity has ended; extend it before listing"
    return None


def connector_issue(
    *, kind: str, url: str, timeout_ms: int, max_attempts: int, has_secret: bool
) -> Issue | None:
    """Why a partner's connector settings cannot work, or None."""
    if kind not in CONNECTOR_KINDS:
        return "connector_kind", f"one of {', '.join(CONNECTOR_KINDS)}"
    if kind == "http":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "connector_url", "an http:// or https:// address"
        if not has_secret:
            return "connector_secret", "an HTTP connector needs a shared secret to sign calls"
    if not 100 <= timeout_ms <= 60_000:
        return "connector_timeout_ms", "from 100 to 60000 milliseconds"
    if not 1 <= max_attempts <= 20:
        return "connector_max_attempts", "from 1 to 20 attempts"
    return None


def settlement_issue(*, cycle: str, statement_day: int, payment_days: int) -> Issue | None:
    """Why settlement terms are impossible, or None."""
    if cycle not in SETTLEMENT_CYCLES:
        return "settlement_terms.cycle", f"one of {', '.join(SETTLEMENT_CYCLES)}"
    # Day 28 at most: every month has it.
    if not 1 <= statement_day <= 28:
        return "settlement_terms.statement_day", "a day of the month from 1 to 28"
    if not 0 <= payment_days <= 365:
        return "settlement_terms.payment_days", "from 0 to 365 days"
    return None


@dataclass(frozen=True)
class CodeRow:
    """One card code read from a partner's file."""

    code: str
    pin: str | None
    expires_on: date | None


MAX_CODE_LEN = 128
MAX_PIN_LEN = 64
_HEADER_WORDS = frozenset({"code", "card_code", "cardcode", "卡号", "卡密"})


def is_header(fields: Sequence[str]) -> bool:
    """Whether the first row of a code file is a header (`code,pin,expiry`)."""
    return bool(fields) and fields[0].strip().lstrip("\ufeff").lower() in _HEADER_WORDS


_SPACE = re.compile(r"\s")


def _printable(value: str) -> bool:
    # Both checks run in C: this is called twice per line of million-line files.
    return value.isprintable() and _SPACE.search(value) is None


def parse_code_row(fields: Sequence[str], *, today: date) -> CodeRow | str:
    """A card code from one CSV row (`code[,pin[,expiry]]`), or why the row is bad."""
    if len(fields) > 3:
        return f"expected code,pin,expiry but found {len(fields)} fields"
    code = fields[0].strip() if fields else ""
    pin = fields[1].strip() if len(fields) > 1 else ""
    expiry = fields[2].strip() if len(fields) > 2 else ""
    if not code:
        return "the code is empty"
    if len(code) > MAX_CODE_LEN or not _printable(code):
        return f"the code must be 1 to {MAX_CODE_LEN} visible characters without spaces"
    if len(pin) > MAX_PIN_LEN or (pin and not _printable(pin)):
        return f"the PIN must be at most {MAX_PIN_LEN} visible characters without spaces"
    expires_on = None
    if expiry:
        try:
            if len(expiry) != 10:
                raise ValueError(expiry)
            expires_on = date.fromisoformat(expiry)
        except ValueError:
            return f"expiry {expiry!r} is not a date as YYYY-MM-DD"
        if expires_on < today:
            return f"the code expired on {expires_on.isoformat()}"
    return CodeRow(code=code, pin=pin or None, expires_on=expires_on)


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
