"""The parsed definition: its nodes, template parameters, and the error a bad one raises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from perkflow.errors import Problem

Scalar = int | float | str | date | bool


@dataclass(frozen=True)
class ParamRef:
    """A template parameter standing where a value will be."""

    name: str


# A value in a rule: a literal, or a template parameter to be bound before compiling.
Value = Scalar | ParamRef


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: Value


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Value, ...]
    negate: bool = False


@dataclass(frozen=True)
class Between:
    column: str
    low: Value
    high: Value


@dataclass(frozen=True)
class NullCheck:
    column: str
    is_null: bool


@dataclass(frozen=True)
class Score:
    """A model-score threshold: `op` is a comparison or `between` (then `high` is set)."""

    model: str
    op: str
    value: float
    high: float | None = None


@dataclass(frozen=True)
class Contacted:
    """At least `at_least` contacts in the last `within_days` days, of a channel/campaign if set."""

    within_days: int
    channel: str | None = None
    campaign: str | None = None
    at_least: int = 1


@dataclass(frozen=True)
class Responded:
    """A response (optionally to one campaign, within a number of days)."""

    within_days: int | None = None
    campaign: str | None = None
    channel: str | None = None


@dataclass(frozen=True)
class MemberOf:
    """Member of another segment; version None means its latest version when compiled."""

    segment_id: int
    version: int | None = None


@dataclass(frozen=True)
class OnList:
    """On the opt-out list (for a channel, or any) or on the complaint list."""

    kind: str
    channel: str | None = None


Node = (
    All
    | AnyOf
    | Not
    | Compare
    | InList
    | Between
    | NullCheck
    | Score
    | Contacted
    | Responded
    | MemberOf
    | OnList
)


@dataclass(frozen=True)
class Definition:
    """A segment: everyone matching `rule` (everyone when None) minus every `exclude` node."""

    rule: Node | None
    exclude: tuple[Node, ...] = ()


class ParamType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    DATE = "date"
    STRING_LIST = "string_list"


@dataclass(frozen=True)
class ParamSpec:
    """A template parameter: its type, and its default when it may be left out."""

    name: str
    type: ParamType
    default: Any = None
    label: str = ""


class InvalidDefinition(ValueError):
    """A definition that does not validate; `problems` names every bad node.

    `at_fault` names, for each problem a rule's column or operator is at fault in, that `column`
    and `op` (the API lists them beside the problem's path and message).
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        at_fault: Mapping[Problem, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__("; ".join(p.text() for p in problems))
        self.problems = list(problems)
        self.at_fault = dict(at_fault or {})
