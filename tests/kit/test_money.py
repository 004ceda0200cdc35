from __future__ import annotations

from perkflow.kit.money import format_fen, yuan_to_fen


def test_yuan_to_fen_rounds_half_away_from_zero() -> None:
    assert yuan_to_fen(19.99) == 1999
    assert yuan_to_fen(0.005) == 1
    assert yuan_to_fen(-0.005) == -1


def test_format_fen() -> None:
    assert format_fen(123450) == "¥1,234.50"
    assert format_fen(-5) == "-¥0.05"
