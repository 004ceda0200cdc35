"""What a definition may speak of: channels, operators, bounds, column kinds and the catalog."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

CHANNELS = ("sms", "email", "push", "in_app", "outbound_call")
ACTIVITY_LEVELS = ("responsive", "active", "low_active", "silent")
COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
ORDER_OPS = ("<", "<=", ">", ">=", "between")
LIST_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
OPS = (*COMPARE_OPS, *LIST_OPS, "between", *NULL_OPS)
HISTORY_KINDS = ("contacted", "responded")
LIST_KINDS = ("opted_out", "complaint")
# Named exclusions a definition may list as plain words; each expands to an ordinary node.
EXCLUSION_SHORTCUTS: dict[str, dict[str, Any]] = {
    "opted_out": {"list": "opted_out"},
    "complaint_list": {"list": "complaint"},
    "churned": {"column": "status", "op": "=", "value": "churned"},
    "suspended": {"column": "status", "op": "=", "value": "suspended"},
}
# Bounds that keep a definition something a person wrote, and its SQL something an engine plans.
MAX_DEPTH = 12
MAX_NODES = 400
MAX_LIST_VALUES = 2000
MAX_DAYS = 3660
MAX_NAME = 120


class Kind(StrEnum):
    """What a mart column holds, as far as a rule is concerned."""

    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    DATE = "date"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"


NUMERIC = frozenset({Kind.INTEGER, Kind.NUMBER})
ORDERED = frozenset({Kind.INTEGER, Kind.NUMBER, Kind.DATE, Kind.TIMESTAMP})


@dataclass(frozen=True)
class ColumnSpec:
    """One column a rule may test; `values` lists a small vocabulary when it is known."""

    name: str
    kind: Kind
    values: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Catalog:
    """What definitions are validated against: columns, model scores, visible segments."""

    columns: Mapping[str, ColumnSpec]
    # Model scores kept as profile columns (churn_risk) and those in the mart's score table.
    score_columns: frozenset[str] = frozenset()
    score_models: frozenset[str] = frozenset()
    # The names in `columns` that are response features (mart table `response_features`), not
    # profile columns: rules test them alike; extraction exports profile columns only.
    feature_columns: frozenset[str] = frozenset()
    # Segment id -> latest version, of the segments the author may reference.
    segments: Mapping[int, int] = field(default_factory=dict)

    @property
    def scores(self) -> frozenset[str]:
        return self.score_columns | self.score_models
