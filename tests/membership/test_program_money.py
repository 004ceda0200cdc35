"""A tier programme's benefit values are read by the one money parser: exact, never rounded."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from perkflow.membership import rules
from perkflow.membership.service import default_program_document


def _with_value(value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(default_program_document())
    doc["tiers"][0]["bundle"][0]["value_yuan"] = value
    return doc


def _first_value_fen(doc: dict[str, Any]) -> int:
    return rules.parse_program(doc).tiers[0].bundle[0].value_fen


def test_a_stated_value_is_exact_fen() -> None:
    assert _first_value_fen(_with_value(19.99)) == 1999  # 19.99 * 100 is 1998.9999… as a float
    assert _first_value_fen(_with_value(15)) == 1500
    assert _first_value_fen(_with_value(1_000_000)) == 100_000_000


@pytest.mark.parametrize("value", [0.125, -1, 1_000_000.01, float("nan"), float("inf"), "15", True])
def test_a_value_that_is_no_amount_is_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(rules.RuleError) as caught:
        rules.parse_program(_with_value(value))
    assert caught.value.field.endswith("bundle[0].value_yuan")
