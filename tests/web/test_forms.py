"""A form's amount of money is read by the one parser and refused with the field named."""

from __future__ import annotations

import pytest

from perkflow.errors import ValidationFailed
from perkflow.kit.bounds import FEN_MAX
from perkflow.web.forms import yuan_to_fen


def test_a_typed_amount_is_exact_fen() -> None:
    assert yuan_to_fen("19.99", field="price") == 1999  # a float would give 1998.9999…
    assert yuan_to_fen(" ¥1,234.5 ", field="price") == 123450
    assert yuan_to_fen("-0.05", field="price", signed=True) == -5
    assert yuan_to_fen("10000000000", field="price") == FEN_MAX


@pytest.mark.parametrize(
    ("text", "kwargs", "problem"),
    [
        ("", {}, "such as 88"),
        ("12.345", {}, "such as 88"),
        ("1e3", {}, "such as 88"),
        ("nan", {}, "such as 88"),
        ("-1", {}, "such as 88"),
        ("10000000000.01", {}, "too large"),
        ("-10000000000.01", {"signed": True}, "too large"),
        ("1000000.01", {"most": 100_000_000}, "too large"),
    ],
)
def test_anything_else_is_a_422_naming_the_field(
    text: str, kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        yuan_to_fen(text, field="order_yuan", **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == "order_yuan" and caught.value.status_code == 422
    assert problem in caught.value.message
