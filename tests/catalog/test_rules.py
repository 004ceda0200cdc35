"""Pure catalog rules: prices, validity, limits, connectors, code lines, yuan parsing."""

from __future__ import annotations

from datetime import date

import pytest

from perkflow.catalog import rules
from perkflow.catalog.rules import CodeRow, ValidityKind
from perkflow.kit.money import parse_yuan

TODAY = date(2026, 11, 23)


def test_price_issues_name_the_field() -> None:
    ok = {"face_value_fen": 2500, "cost_price_fen": 1200, "sale_price_fen": 1500}
    assert rules.price_issue(**ok) is None
    assert rules.price_issue(**(ok | {"sale_price_fen": -1}))[0] == "sale_price_fen"
    assert rules.price_issue(**(ok | {"cost_price_fen": 2600}))[0] == "cost_price_fen"
    assert rules.price_issue(**(ok | {"face_value_fen": 10**9}))[0] == "face_value_fen"


def test_validity_needs_the_settings_of_its_kind() -> None:
    days = ValidityKind.DAYS
    fixed = ValidityKind.FIXED
    assert rules.validity_issue(kind=days, valid_days=30, valid_from=None, valid_until=None) is None
    assert rules.validity_issue(kind=days, valid_days=None, valid_from=None, valid_until=None)
    assert (
        rules.validity_issue(kind=fixed, valid_days=None, valid_from=None, valid_until=TODAY)
        is None
    )
    issue = rules.validity_issue(
        kind=fixed, valid_days=None, valid_from=date(2027, 1, 1), valid_until=TODAY
    )
    assert issue is not None and issue[0] == "valid_until"
    assert rules.listing_issue(kind=fixed, valid_until=date(2026, 11, 22), today=TODAY)
    assert rules.listing_issue(kind=fixed, valid_until=TODAY, today=TODAY) is None


def test_limits_and_stock() -> None:
    assert rules.limits_issue(limit_per_month=None, limit_total=None) is None
    assert rules.limits_issue(limit_per_month=3, limit_total=2) == (
        "limit_per_month",
        "the monthly limit cannot exceed the total limit",
    )
    assert rules.stock_issue(stock=None, low_stock_threshold=0) is None
    assert rules.stock_issue(stock=-1, low_stock_threshold=0)[0] == "stock"


def test_connector_and_settlement() -> None:
    base = {"timeout_ms": 3000, "max_attempts": 5}
    assert rules.connector_issue(kind="none", url="", has_secret=False, **base) is None
    assert (
        rules.connector_issue(kind="smtp", url="", has_secret=False, **base)[0] == "connector_kind"
    )
    assert rules.connector_issue(kind="http", url="tv.example", has_secret=True, **base)[0] == (
        "connector_url"
    )
    assert (
        rules.connector_issue(kind="http", url="https://tv.example", has_secret=True, **base)
        is None
    )
    assert rules.settlement_issue(cycle="weekly", statement_day=5, payment_days=30)
    assert rules.settlement_issue(cycle="monthly", statement_day=29, payment_days=30)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["ABC-123"], CodeRow("ABC-123", None, None)),
        ([" ABC-123 ", " 9876 ", "2027-01-31"], CodeRow("ABC-123", "9876", date(2027, 1, 31))),
        (["ABC-123", "", ""], CodeRow("ABC-123", None, None)),
        (["ABC-123", "", "2026-11-23"], CodeRow("ABC-123", None, TODAY)),
    ],
)
def test_good_code_lines(fields: list[str], expected: CodeRow) -> None:
    assert rules.parse_code_row(fields, today=TODAY) == expected


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([""], "empty"),
        (["AB C"], "without spaces"),
        (["A\x07B"], "visible"),
        (["X" * 129], "1 to 128"),
        (["ABC", "1 2"], "PIN"),
        (["ABC", "", "2026-11-22"], "expired on 2026-11-22"),
        (["ABC", "", "2026/12/01"], "YYYY-MM-DD"),
        (["ABC", "", "2026-1-1"], "YYYY-MM-DD"),
        (["ABC", "1", "2027-01-01", "extra"], "4 fields"),
    ],
)
def test_bad_code_lines_say_why(fields: list[str], reason: str) -> None:
    result = rules.parse_code_row(fields, today=TODAY)
    assert isinstance(result, str) and reason in result


def test_header_detection() -> None:
    assert rules.is_header(["code", "pin", "expiry"])
    assert rules.is_header(["\ufeff卡号", "密码"])
    assert not rules.is_header(["ABC-123"])


def test_yuan_is_parsed_exactly() -> None:
    assert [parse_yuan(t) for t in ("15", "15.5", "15.50", "1,234.56", "0.07")] == [
        1500,
        1550,
        1550,
        123456,
        7,
    ]
    for bad in ("", "1.234", "abc", "1e3", "."):
        with pytest.raises(ValueError):
            parse_yuan(bad)
