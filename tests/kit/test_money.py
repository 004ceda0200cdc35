from __future__ import annotations

import pytest

from perkflow.kit.money import format_fen, parse_yuan


def test_parse_yuan_is_exact_decimal() -> None:
    assert parse_yuan("19.99") == 1999  # a float would give 1998.9999…
    assert parse_yuan("¥1,234.5") == 123450
    assert parse_yuan("-0.05") == -5
    for bad in ("", "1.234", "1e3", "12,5.x", "¥"):
        with pytest.raises(ValueError):
            parse_yuan(bad)


def test_format_fen() -> None:
    assert format_fen(123450) == "¥1,234.50"
    assert format_fen(-5) == "-¥0.05"
