"""Money is integer fen; these helpers convert and format it."""

from __future__ import annotations


def format_fen(fen: int) -> str:
    """`¥1,234.50` for 123450 fen."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def parse_yuan(text: str) -> int:
    """Exact fen for a typed amount in yuan (`15`, `15.5`, `1,234.50`); ValueError otherwise."""
    cleaned = text.strip().replace(",", "").removeprefix("¥")
    sign = -1 if cleaned.startswith("-") else 1
    whole, _, cents = cleaned.lstrip("+-").partition(".")
    # Decimal digits only, at most two after the point: no float rounding ever touches money.
    if (whole and not whole.isdigit()) or (cents and not cents.isdigit()) or not whole + cents:
        raise ValueError(f"{text!r} is not an amount in yuan")
    if len(cents) > 2:
        raise ValueError(f"{text!r} has more than two decimals")
    return sign * (int(whole or "0") * 100 + int(cents.ljust(2, "0") or "0"))
