"""Bounded, strict input types: what the edge accepts before a value reaches the ledger.

The ledger's integers are 64-bit and its text columns refuse NUL on PostgreSQL, so a value out
of those bounds must be refused where it enters (a 422 naming the field), not met by the driver
(a 500). Request bodies use the strict types: JSON `true` is not the integer 1 and `"5"` is not 5.
Path and query parameters arrive as text, so their id type parses the text and bounds the number.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, Field, Strict

INT64_MAX = 2**63 - 1
# Money in fen: ten billion yuan, beyond any one amount the platform moves.
FEN_MAX = 10**12
# Counts, days, versions, stock: a 32-bit column holds them anywhere.
COUNT_MAX = 2**31 - 1

# C0 controls and DEL. A line of text refuses them all; a body of text keeps tab and newlines.
_LINE_BAD = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _line(value: str) -> str:
    if _LINE_BAD.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if _TEXT_BAD.search(value):
        raise ValueError("must not contain control characters other than tab and newline")
    return value


# --- request bodies (JSON): strict ---------------------------------------------------------
# Bounds ride as annotated-types markers: a field's own `Field(ge=, le=)` would replace them,
# so a field narrows `Int` with its own bounds and never bounds an `Id` again.
Id = Annotated[int, Strict(), Ge(1), Le(INT64_MAX)]
"""A row id in a body: a JSON integer from 1 to 2^63-1."""

Int = Annotated[int, Strict()]
"""Any other integer in a body: a JSON integer; the field gives its bounds (test_bounds checks)."""

Line = Annotated[str, AfterValidator(_line), Field(json_schema_extra={"pattern": LINE_PATTERN})]
"""One line of text (names, codes, keys): no control characters at all."""

Text = Annotated[str, AfterValidator(_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})]
"""Free text (descriptions, notes, message bodies): tab and newlines allowed, no other controls."""


# --- path and query parameters (text on the wire) ------------------------------------------
IdParam = Annotated[int, Ge(1), Le(INT64_MAX)]
"""A row id in a path or query string: 1 to 2^63-1."""

LineParam = Annotated[
    str, AfterValidator(_line), Field(max_length=200, json_schema_extra={"pattern": LINE_PATTERN})
]
"""A short text in a path or query string."""


# --- JSON documents (definitions, specs, event attributes) ---------------------------------
def check_document(
    value: Any,
    *,
    max_depth: int,
    max_keys: int,
    max_string: int,
    path: str = "",
    depth: int = 0,
) -> None:
    """Raise ValueError naming the first place where a JSON value leaves the bounds."""
    where = path or "value"
    if isinstance(value, dict):
        if depth >= max_depth:
            raise ValueError(f"{where}: nested deeper than {max_depth} levels")
        if len(value) > max_keys:
            raise ValueError(f"{where}: more than {max_keys} keys")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 128 or _LINE_BAD.search(key):
                raise ValueError(f"{where}: keys are at most 128 characters, no control characters")
            check_document(
                item,
                max_depth=max_depth,
                max_keys=max_keys,
                max_string=max_string,
                path=f"{path}.{key}" if path else key,
                depth=depth + 1,
            )
    elif isinstance(value, list):
        if depth >= max_depth:
            raise ValueError(f"{where}: nested deeper than {max_depth} levels")
        if len(value) > max_keys:
            raise ValueError(f"{where}: more than {max_keys} items")
        for i, item in enumerate(value):
            check_document(
                item,
                max_depth=max_depth,
                max_keys=max_keys,
                max_string=max_string,
                path=f"{path}[{i}]",
                depth=depth + 1,
            )
    elif isinstance(value, str):
        if len(value.encode()) > max_string:
            raise ValueError(f"{where}: longer than {max_string} bytes")
        if _TEXT_BAD.search(value):
            raise ValueError(f"{where}: must not contain control characters")
    elif isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX:
        raise ValueError(f"{where}: integer out of the 64-bit range")


def _document(value: dict[str, Any]) -> dict[str, Any]:
    check_document(value, max_depth=16, max_keys=1000, max_string=10_000)
    return value


def _attributes(value: dict[str, Any]) -> dict[str, Any]:
    check_document(value, max_depth=3, max_keys=50, max_string=1024)
    return value


Document = Annotated[dict[str, Any], AfterValidator(_document)]
"""A JSON object given as configuration: depth 16, 1,000 keys a level, strings of 10 KB."""

Attributes = Annotated[dict[str, Any], AfterValidator(_attributes)]
"""Event attributes: at most 50 keys, nested 3 deep, each string at most 1 KB."""
