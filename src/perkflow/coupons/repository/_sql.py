"""A helper shared by the coupon queries: the row count of a statement's result."""

from __future__ import annotations

from typing import Any


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
