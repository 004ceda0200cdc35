"""Money is integer fen; these helpers convert and format it."""

from __future__ import annotations


def yuan_to_fen(yuan: int | float) -> int:
    """Whole fen for an amount in yuan, rounded half away from zero."""
    fen = abs(yuan) * 100
    rounded = int(fen + 0.5)
    return rounded if yuan >= 0 else -rounded


def format_fen(fen: int) -> str:
    """`¥1,234.50` for 123450 fen."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"
