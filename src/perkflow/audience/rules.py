"""Pure rules of the audience: definitions and their validation, control split, contact policy."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

import yaml

from perkflow.org.rules import Actor, Role

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
# A campaign salt or a universal-control salt goes into hashed text: keep it short and plain.
SALT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TEMPLATE_NAME = re.compile(r"^[^\x00-\x1f]{1,120}$")
PHONE_COLUMN = "phone"


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


# ---- the parsed tree ---------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, at a path such as `rule.all[2].value`."""

    path: str
    message: str
    column: str | None = None
    op: str | None = None

    def text(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidDefinition(ValueError):
    """A definition that does not validate; `problems` names every bad node."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(p.text() for p in problems))
        self.problems = list(problems)


# ---- parsing and validation ------------------------------------------------------------------


def _is_number(value: Any) -> TypeGuard[int | float]:
    # bool is an int in Python, but `true` is not a number in a definition.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt_values(values: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(values[:limit])
    return shown + (", …" if len(values) > limit else "")


class _Parser:
    def __init__(self, catalog: Catalog, params: Mapping[str, ParamSpec] | None) -> None:
        self.catalog = catalog
        self.params = params
        self.problems: list[Problem] = []
        self.nodes = 0

    def bad(self, path: str, message: str, **where: str | None) -> None:
        self.problems.append(Problem(path=path, message=message, **where))

    def node(self, raw: Any, path: str, depth: int) -> Node | None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if self.nodes == MAX_NODES + 1:
                self.bad(path, f"a definition may hold at most {MAX_NODES} rules")
            return None
        if depth > MAX_DEPTH:
            self.bad(path, f"rules may nest at most {MAX_DEPTH} deep")
            return None
        if not isinstance(raw, Mapping):
            self.bad(path, "a rule must be an object such as {column, op, value} or {all: [...]}")
            return None
        for key in ("all", "any"):
            if key in raw:
                return self.group(raw, key, path, depth)
        if "not" in raw:
            self.extra_keys(raw, {"not"}, path)
            child = self.node(raw["not"], f"{path}.not", depth + 1)
            return Not(child) if child is not None else None
        if "column" in raw:
            return self.column_rule(raw, path)
        if "score" in raw:
            return self.score_rule(raw, path)
        if "history" in raw:
            return self.history_rule(raw, path)
        if "segment" in raw:
            return self.segment_rule(raw, path)
        if "list" in raw:
            return self.list_rule(raw, path)
        self.bad(
            path,
            "unknown rule; expected one of all, any, not, column, score, history, segment, list",
        )
        return None

    def extra_keys(self, raw: Mapping[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            self.bad(path, f"unexpected key(s) {', '.join(map(str, extra))}")

    def group(self, raw: Mapping[str, Any], key: str, path: str, depth: int) -> Node | None:
        self.extra_keys(raw, {key}, path)
        items = raw[key]
        if not isinstance(items, list) or not items:
            self.bad(f"{path}.{key}", f"'{key}' needs a non-empty list of rules")
            return None
        children = [self.node(c, f"{path}.{key}[{i}]", depth + 1) for i, c in enumerate(items)]
        kept = tuple(c for c in children if c is not None)
        if len(kept) != len(children):
            return None
        return All(kept) if key == "all" else AnyOf(kept)

    # -- values --
    def value(self, raw: Any, spec: ColumnSpec, path: str, op: str) -> Value | None:
        if isinstance(raw, Mapping) and set(raw) == {"param"}:
            return self.param_value(raw["param"], spec, path, op)
        where = {"column": spec.name, "op": op}
        if raw is None:
            self.bad(path, f"a value is required for '{op}'", **where)
            return None
        kind = spec.kind
        if kind in NUMERIC:
            if not _is_number(raw):
                self.bad(path, f"column {spec.name} is a number; got {raw!r}", **where)
                return None
            return raw
        if kind == Kind.STRING:
            if not isinstance(raw, str):
                self.bad(path, f"column {spec.name} is text; got {raw!r}", **where)
                return None
            if spec.values is not None and raw not in spec.values:
                self.bad(
                    path,
                    f"{raw!r} is not a value of {spec.name} (known: {_fmt_values(spec.values)})",
                    **where,
                )
                return None
            return raw
        if kind == Kind.DATE:
            if isinstance(raw, date) and not isinstance(raw, datetime):
                return raw
            if isinstance(raw, str):
                try:
                    return date.fromisoformat(raw)
                except ValueError:
                    pass
            self.bad(path, f"column {spec.name} is a date (YYYY-MM-DD); got {raw!r}", **where)
            return None
        if kind == Kind.BOOLEAN:
            if not isinstance(raw, bool):
                self.bad(path, f"column {spec.name} is true/false; got {raw!r}", **where)
                return None
            return raw
        self.bad(path, f"column {spec.name} ({kind.value}) cannot be compared in a rule", **where)
        return None

    def param_value(self, name: Any, spec: ColumnSpec, path: str, op: str) -> ParamRef | None:
        where = {"column": spec.name, "op": op}
        if self.params is None:
            self.bad(path, "parameters are only allowed in extraction templates", **where)
            return None
        if not isinstance(name, str) or name not in self.params:
            known = ", ".join(sorted(self.params)) or "none declared"
            self.bad(path, f"unknown parameter {name!r} (declared: {known})", **where)
            return None
        param = self.params[name]
        fits = {
            ParamType.NUMBER: NUMERIC,
            ParamType.INTEGER: NUMERIC,
            ParamType.STRING: {Kind.STRING},
            ParamType.DATE: {Kind.DATE},
            ParamType.STRING_LIST: {Kind.STRING},
        }[param.type]
        if spec.kind not in fits:
            self.bad(
                path,
                f"parameter {name} is a {param.type.value} but column {spec.name} is "
                f"a {spec.kind.value}",
                **where,
            )
            return None
        return ParamRef(name)

    def column(self, raw: Mapping[str, Any], path: str) -> ColumnSpec | None:
        name = raw.get("column")
        if not isinstance(name, str) or name not in self.catalog.columns:
            known = ", ".join(sorted(self.catalog.columns))
            self.bad(
                f"{path}.column",
                f"unknown column {name!r} (known: {known})",
                column=str(name),
            )
            return None
        return self.catalog.columns[name]

    def column_rule(self, raw: Mapping[str, Any], path: str) -> Node | None:
        spec = self.column(raw, path)
        op = raw.get("op")
        if not isinstance(op, str) or op not in OPS:
            self.bad(
                f"{path}.op",
                f"unknown operator {op!r} (known: {' '.join(OPS)})",
                column=str(raw.get("column")),
                op=str(op),
            )
            return None
        if spec is None:
            return None
        where = {"column": spec.name, "op": op}
        if op in ORDER_OPS and spec.kind not in ORDERED:
            self.bad(
                f"{path}.op",
                f"'{op}' needs a number or date column; {spec.name} is {spec.kind.value}",
                **where,
            )
            return None
        if op in NULL_OPS:
            self.extra_keys(raw, {"column", "op"}, path)
            return NullCheck(spec.name, is_null=op == "is_null")
        if op in LIST_OPS:
            self.extra_keys(raw, {"column", "op", "values"}, path)
            return self.in_list(raw.get("values"), spec, path, op)
        if op == "between":
            self.extra_keys(raw, {"column", "op", "low", "high"}, path)
            low = self.value(raw.get("low"), spec, f"{path}.low", op)
            high = self.value(raw.get("high"), spec, f"{path}.high", op)
            if low is None or high is None:
                return None
            if not isinstance(low, ParamRef) and not isinstance(high, ParamRef) and low > high:  # type: ignore[operator]
                self.bad(f"{path}.high", "high is below low", **where)
                return None
            return Between(spec.name, low, high)
        self.extra_keys(raw, {"column", "op", "value"}, path)
        value = self.value(raw.get("value"), spec, f"{path}.value", op)
        return Compare(spec.name, op, value) if value is not None else None

    def in_list(self, raw: Any, spec: ColumnSpec, path: str, op: str) -> Node | None:
        where = {"column": spec.name, "op": op}
        if isinstance(raw, Mapping) and set(raw) == {"param"}:
            ref = self.param_value(raw["param"], spec, f"{path}.values", op)
            if ref is None:
                return None
            return InList(spec.name, (ref,), negate=op == "not_in")
        if not isinstance(raw, list) or not raw:
            self.bad(f"{path}.values", f"'{op}' needs a non-empty list of values", **where)
            return None
        if len(raw) > MAX_LIST_VALUES:
            self.bad(f"{path}.values", f"at most {MAX_LIST_VALUES} values", **where)
            return None
        values = [self.value(v, spec, f"{path}.values[{i}]", op) for i, v in enumerate(raw)]
        if any(v is None for v in values):
            return None
        unique = tuple(dict.fromkeys(values))  # order kept, duplicates dropped
        return InList(spec.name, unique, negate=op == "not_in")  # type: ignore[arg-type]

    def score_rule(self, raw: Mapping[str, Any], path: str) -> Node | None:
        model = raw.get("score")
        op = raw.get("op")
        if not isinstance(model, str) or model not in self.catalog.scores:
            known = ", ".join(sorted(self.catalog.scores)) or "none"
            self.bad(f"{path}.score", f"unknown model score {model!r} (known: {known})")
            return None
        where = {"column": model, "op": str(op)}
        if op not in (*COMPARE_OPS, "between"):
            self.bad(f"{path}.op", f"a score takes {' '.join(COMPARE_OPS)} or between", **where)
            return None
        if op == "between":
            self.extra_keys(raw, {"score", "op", "low", "high"}, path)
            low, high = raw.get("low"), raw.get("high")
            if not _is_number(low) or not _is_number(high):
                self.bad(f"{path}.low", "a score range needs numeric low and high", **where)
                return None
            if low > high:
                self.bad(f"{path}.high", "high is below low", **where)
                return None
            return Score(model, "between", float(low), float(high))
        self.extra_keys(raw, {"score", "op", "value"}, path)
        value = raw.get("value")
        if not _is_number(value):
            self.bad(f"{path}.value", f"a score threshold is a number; got {value!r}", **where)
            return None
        return Score(model, str(op), float(value))

    def days(self, raw: Any, path: str, *, required: bool) -> int | None:
        if raw is None and not required:
            return None
        if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= MAX_DAYS:
            self.bad(path, f"within_days is a whole number of days from 1 to {MAX_DAYS}")
            return None
        return raw

    def channel(self, raw: Any, path: str) -> str | None:
        if raw is not None and raw not in CHANNELS:
            self.bad(path, f"unknown channel {raw!r} (known: {', '.join(CHANNELS)})")
        return raw if raw in CHANNELS else None

    def campaign(self, raw: Any, path: str) -> str | None:
        if raw is not None and (not isinstance(raw, str | int) or isinstance(raw, bool)):
            self.bad(path, "a campaign is named by its id")
            return None
        return None if raw is None else str(raw)

    def history_rule(self, raw: Mapping[str, Any], path: str) -> Node | None:
        kind = raw.get("history")
        before = len(self.problems)
        if kind == "contacted":
            self.extra_keys(
                raw, {"history", "within_days", "channel", "campaign", "at_least"}, path
            )
            days = self.days(raw.get("within_days"), f"{path}.within_days", required=True)
            channel = self.channel(raw.get("channel"), f"{path}.channel")
            campaign = self.campaign(raw.get("campaign"), f"{path}.campaign")
            at_least = raw.get("at_least", 1)
            if not isinstance(at_least, int) or isinstance(at_least, bool) or at_least < 1:
                self.bad(f"{path}.at_least", "at_least is a whole number, 1 or more")
            if len(self.problems) > before or days is None:
                return None
            return Contacted(days, channel, campaign, at_least)
        if kind == "responded":
            self.extra_keys(raw, {"history", "within_days", "channel", "campaign"}, path)
            days = self.days(raw.get("within_days"), f"{path}.within_days", required=False)
            channel = self.channel(raw.get("channel"), f"{path}.channel")
            campaign = self.campaign(raw.get("campaign"), f"{path}.campaign")
            if len(self.problems) > before:
                return None
            return Responded(days, campaign, channel)
        self.bad(f"{path}.history", f"unknown history {kind!r} (known: contacted, responded)")
        return None

    def segment_rule(self, raw: Mapping[str, Any], path: str) -> Node | None:
        self.extra_keys(raw, {"segment", "version"}, path)
        sid, version = raw.get("segment"), raw.get("version")
        if not isinstance(sid, int) or isinstance(sid, bool) or sid not in self.catalog.segments:
            self.bad(f"{path}.segment", f"unknown segment {sid!r}")
            return None
        if version is not None and (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= self.catalog.segments[sid]
        ):
            self.bad(
                f"{path}.version", f"segment {sid} has versions 1 to {self.catalog.segments[sid]}"
            )
            return None
        return MemberOf(sid, version)

    def list_rule(self, raw: Mapping[str, Any], path: str) -> Node | None:
        self.extra_keys(raw, {"list", "channel"}, path)
        kind = raw.get("list")
        if kind not in LIST_KINDS:
            self.bad(f"{path}.list", f"unknown list {kind!r} (known: {', '.join(LIST_KINDS)})")
            return None
        channel = self.channel(raw.get("channel"), f"{path}.channel")
        if raw.get("channel") is not None and channel is None:
            return None
        return OnList(str(kind), channel)

    def exclusion(self, raw: Any, path: str) -> Node | None:
        if isinstance(raw, str):
            if raw not in EXCLUSION_SHORTCUTS:
                self.bad(
                    path,
                    f"unknown exclusion {raw!r} (known: {', '.join(EXCLUSION_SHORTCUTS)}, "
                    "or any rule)",
                )
                return None
            return self.node(EXCLUSION_SHORTCUTS[raw], path, 1)
        return self.node(raw, path, 1)


def parse_definition(
    raw: Any, catalog: Catalog, *, params: Mapping[str, ParamSpec] | None = None
) -> Definition:
    """A validated definition, or InvalidDefinition naming the path of every bad node."""
    parser = _Parser(catalog, params)
    if not isinstance(raw, Mapping):
        raise InvalidDefinition(
            [Problem("", "a definition is an object with 'rule' and 'exclude'")]
        )
    extra = sorted(set(raw) - {"rule", "exclude", "name", "description"})
    if extra:
        parser.bad("", f"unexpected key(s) {', '.join(map(str, extra))}")
    rule = parser.node(raw["rule"], "rule", 1) if raw.get("rule") is not None else None
    excludes_raw = raw.get("exclude") or []
    excludes: list[Node] = []
    if not isinstance(excludes_raw, list):
        parser.bad("exclude", "'exclude' is a list")
    else:
        for i, item in enumerate(excludes_raw):
            node = parser.exclusion(item, f"exclude[{i}]")
            if node is not None:
                excludes.append(node)
    if parser.problems:
        raise InvalidDefinition(parser.problems)
    return Definition(rule=rule, exclude=tuple(excludes))


# ---- the canonical stored form -----------------------------------------------------------------


def _dump_value(value: Any) -> Any:
    if isinstance(value, ParamRef):
        return {"param": value.name}
    if isinstance(value, date):
        return value.isoformat()
    return value


def dump_node(node: Node) -> dict[str, Any]:
    """A node back as plain JSON, in one canonical shape."""
    match node:
        case All(children):
            return {"all": [dump_node(c) for c in children]}
        case AnyOf(children):
            return {"any": [dump_node(c) for c in children]}
        case Not(child):
            return {"not": dump_node(child)}
        case Compare(column, op, value):
            return {"column": column, "op": op, "value": _dump_value(value)}
        case InList(column, values, negate):
            if len(values) == 1 and isinstance(values[0], ParamRef):
                dumped: Any = _dump_value(values[0])
            else:
                dumped = [_dump_value(v) for v in values]
            return {"column": column, "op": "not_in" if negate else "in", "values": dumped}
        case Between(column, low, high):
            return {
                "column": column,
                "op": "between",
                "low": _dump_value(low),
                "high": _dump_value(high),
            }
        case NullCheck(column, is_null):
            return {"column": column, "op": "is_null" if is_null else "not_null"}
        case Score(model, op, value, high):
            if op == "between":
                return {"score": model, "op": op, "low": value, "high": high}
            return {"score": model, "op": op, "value": value}
        case Contacted(days, channel, campaign, at_least):
            out: dict[str, Any] = {"history": "contacted", "within_days": days}
            if channel:
                out["channel"] = channel
            if campaign:
                out["campaign"] = campaign
            if at_least != 1:
                out["at_least"] = at_least
            return out
        case Responded(days, campaign, channel):
            out = {"history": "responded"}
            if days:
                out["within_days"] = days
            if campaign:
                out["campaign"] = campaign
            if channel:
                out["channel"] = channel
            return out
        case MemberOf(sid, version):
            return {"segment": sid} if version is None else {"segment": sid, "version": version}
        case OnList(kind, channel):
            return {"list": kind} if channel is None else {"list": kind, "channel": channel}
    raise TypeError(f"not a node: {node!r}")


def dump_definition(definition: Definition) -> dict[str, Any]:
    """The canonical JSON of a definition: what a segment version stores."""
    out: dict[str, Any] = {}
    if definition.rule is not None:
        out["rule"] = dump_node(definition.rule)
    if definition.exclude:
        out["exclude"] = [dump_node(n) for n in definition.exclude]
    return out


def walk(node: Node) -> Iterable[Node]:
    """The node and every node below it."""
    yield node
    match node:
        case All(children) | AnyOf(children):
            for c in children:
                yield from walk(c)
        case Not(child):
            yield from walk(child)


def referenced_segments(definition: Definition) -> set[tuple[int, int | None]]:
    """The (segment, version) pairs a definition is a member-of test on."""
    nodes = [definition.rule] if definition.rule is not None else []
    nodes += list(definition.exclude)
    return {
        (n.segment_id, n.version) for root in nodes for n in walk(root) if isinstance(n, MemberOf)
    }


# ---- the console's simple builder --------------------------------------------------------------


def _form_value(text: str, spec: ColumnSpec) -> Any:
    """A typed value from a form field; raises ValueError with a message a person can act on."""
    text = text.strip()
    if not text:
        raise ValueError("a value is required")
    if spec.kind == Kind.INTEGER:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError as exc:
            raise ValueError(f"column {spec.name} is a number; got {text!r}") from exc
    if spec.kind == Kind.NUMBER:
        try:
            return float(text)
        except ValueError as exc:
            raise ValueError(f"column {spec.name} is a number; got {text!r}") from exc
    if spec.kind == Kind.BOOLEAN:
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"column {spec.name} is true/false; got {text!r}")
    return text


def definition_from_form(
    *, match: str, rows: Sequence[tuple[str, str, str]], exclude: Sequence[str], catalog: Catalog
) -> dict[str, Any]:
    """The raw definition behind the builder's rows of (column, op, text); bad text is a Problem."""
    key = "any" if match == "any" else "all"
    problems: list[Problem] = []
    rules: list[dict[str, Any]] = []
    for i, (column, op, text) in enumerate(rows):
        path = f"rule.{key}[{i}]"
        spec = catalog.columns.get(column)
        if spec is None or op not in OPS:
            # Leave naming the bad column or operator to the parser.
            rules.append({"column": column, "op": op, "value": text})
            continue
        try:
            if op in NULL_OPS:
                rules.append({"column": column, "op": op})
            elif op in LIST_OPS:
                parts = [p for p in (s.strip() for s in text.split(",")) if p]
                if not parts:
                    raise ValueError("a value is required")
                values = [_form_value(p, spec) for p in parts]
                rules.append({"column": column, "op": op, "values": values})
            elif op == "between":
                parts = [p.strip() for p in re.split(r",|\.\.", text) if p.strip()]
                if len(parts) != 2:
                    raise ValueError("between takes two values: low, high")
                low, high = (_form_value(p, spec) for p in parts)
                rules.append({"column": column, "op": op, "low": low, "high": high})
            else:
                rules.append({"column": column, "op": op, "value": _form_value(text, spec)})
        except ValueError as exc:
            problems.append(Problem(f"{path}.value", str(exc), column=column, op=op))
    if problems:
        raise InvalidDefinition(problems)
    raw: dict[str, Any] = {}
    if rules:
        raw["rule"] = {key: rules}
    if exclude:
        raw["exclude"] = list(dict.fromkeys(exclude))
    return raw


def form_rows(raw: Mapping[str, Any]) -> tuple[str, list[tuple[str, str, str]], list[str]] | None:
    """The builder's (match, rows, exclusions) for a definition simple enough, else None."""
    rule = raw.get("rule")
    exclude = raw.get("exclude") or []
    if not all(isinstance(e, str) and e in EXCLUSION_SHORTCUTS for e in exclude):
        shortcuts = {json_key(v): k for k, v in EXCLUSION_SHORTCUTS.items()}
        names = [shortcuts.get(json_key(e)) for e in exclude]
        if any(n is None for n in names):
            return None
        exclude = names
    if rule is None:
        return "all", [], list(exclude)
    key = "all" if "all" in rule else "any" if "any" in rule else None
    if key is None:
        return None
    rows: list[tuple[str, str, str]] = []
    for item in rule[key]:
        if "column" not in item:
            return None
        op = item["op"]
        if op in NULL_OPS:
            text = ""
        elif op in LIST_OPS:
            if not isinstance(item["values"], list):
                return None
            text = ", ".join(str(v) for v in item["values"])
        elif op == "between":
            text = f"{item['low']}, {item['high']}"
        else:
            if isinstance(item["value"], Mapping):
                return None
            text = str(item["value"])
        rows.append((item["column"], op, text))
    return key, rows, list(exclude)


def json_key(value: Any) -> str:
    """A hashable, order-independent key of a JSON value."""
    return json.dumps(value, sort_keys=True, default=str)


# ---- control groups ----------------------------------------------------------------------------

HASH_PREFIX_HEX = 8  # 32 bits of SHA-256: a share resolves to 1 in 4 billion
BASIS_POINTS = 10_000
MAX_CONTROL_BP = 5_000


def share_problem(share_bp: int, *, what: str = "control share") -> str | None:
    """Why a share in basis points is out of range, or None."""
    if not 0 <= share_bp <= MAX_CONTROL_BP:
        return f"{what} must be between 0 and {MAX_CONTROL_BP / 100:g} %"
    return None


# Randomized rounding of a province's control quota: a draw of 6 hex digits of a keyed hash.
QUOTA_DRAW_HEX = 6
QUOTA_DRAW_SPAN = 16**QUOTA_DRAW_HEX


def quota_draw_text(control_prefix: str, province: str | None) -> str:
    """The hashed text of a province's quota draw: the list's `key:salt:`, then the province."""
    return f"{control_prefix}quota:{province or ''}"


def quota_draw(control_prefix: str, province: str | None) -> int:
    """A province's draw in [0, QUOTA_DRAW_SPAN): uniform, fixed by the list's key and salt."""
    digest = hashlib.sha256(quota_draw_text(control_prefix, province).encode()).hexdigest()
    return int(digest[:QUOTA_DRAW_HEX], 16)


def control_quota(n: int, share_bp: int, draw: int) -> int:
    """How many of `n` eligible subscribers of one province go to control.

    The whole part of ``n × share``, plus one with a probability equal to the fraction left
    (randomized rounding by the province's draw): the expected share is the plan's in every
    province however small, where rounding half up gave a 10 % plan 0 % in a province of 4 and
    20 % in a province of 5.
    """
    whole, fraction = divmod(n * share_bp, BASIS_POINTS)
    return whole + int(draw * BASIS_POINTS < fraction * QUOTA_DRAW_SPAN)


def hash_threshold(share_bp: int) -> str:
    """The hex prefix below which a subscriber's hash puts them in a share of everyone."""
    return format(share_bp * 16**HASH_PREFIX_HEX // BASIS_POINTS, f"0{HASH_PREFIX_HEX}x")


def hash_input_prefix(key: str, salt: str) -> str:
    """The text before the subscriber id in the hashed string `key:salt:id`."""
    return f"{key}:{salt}:"


@dataclass(frozen=True)
class UniversalControl:
    """A share of all subscribers held out of every campaign; members rotate every period."""

    share_bp: int
    rotation_days: int
    started_on: date
    salt: str

    def period(self, on: date) -> int:
        """The rotation period a day falls in (0 before the start)."""
        return max(0, (on - self.started_on).days // self.rotation_days)

    def period_bounds(self, period: int) -> tuple[date, date]:
        """First and last day of a period."""
        first = self.started_on + timedelta(days=period * self.rotation_days)
        return first, first + timedelta(days=self.rotation_days - 1)

    def period_salt(self, period: int) -> str:
        """A new draw every period: members change on rotation."""
        return f"ucg:{self.salt}:{period}"


DEFAULT_UNIVERSAL_CONTROL = UniversalControl(
    share_bp=500, rotation_days=90, started_on=date(2026, 1, 1), salt="ucg"
)


def universal_control_problem(*, share_bp: int, rotation_days: int, salt: str) -> str | None:
    """Why a universal control setting is not usable, or None."""
    problem = share_problem(share_bp, what="universal control share")
    if problem:
        return problem
    if not 7 <= rotation_days <= 730:
        return "rotation must be every 7 to 730 days"
    if not SALT.fullmatch(salt):
        return "salt: 1–64 letters, digits, _ . : -"
    return None


# ---- contact policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cap:
    """At most `max_contacts` contacts in any `window_days` days."""

    max_contacts: int
    window_days: int


@dataclass(frozen=True)
class QuietHours:
    """No contact from `start` to `end` local time; wraps past midnight when start > end."""

    start: time
    end: time

    def covers(self, at: time) -> bool:
        if self.start <= self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


class Reason(StrEnum):
    """Why a segment member is not contacted; the first that applies, in this order."""

    OPTED_OUT = "opted_out"
    COMPLAINT = "complaint"
    NOT_ACTIVE = "not_active"
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"


class ListCell(StrEnum):
    """The cell a target list puts each candidate in (campaigns.rules.Cell is the evaluation arm)."""

    TARGET = "target"
    CONTROL = "control"
    UNIVERSAL_CONTROL = "universal_control"
    SUPPRESSED = "suppressed"


# From the operator case studies: a responsive subscriber hears from a service line at most once in
# three days, a low-active one once a week, a silent one once or twice a month.
_ACTIVITY_CAPS = {
    "responsive": Cap(1, 3),
    "active": Cap(1, 5),
    "low_active": Cap(1, 7),
    "silent": Cap(2, 30),
}
# In-app banners are seen only by those who open the app: no frequency cap, no quiet hours.
_CAPPED_CHANNELS = ("sms", "email", "push", "outbound_call")
DEFAULT_QUIET_HOURS = {
    "sms": QuietHours(time(21, 0), time(8, 0)),
    "outbound_call": QuietHours(time(20, 0), time(9, 0)),
    "push": QuietHours(time(22, 0), time(8, 0)),
}
# Subscribers' local zones: the operator's zone, except where people keep their own clock.
PROVINCE_ZONES = {"XJ": "Asia/Urumqi"}


@dataclass(frozen=True)
class ContactPolicy:
    """Frequency caps per channel and activity group, and quiet hours per channel."""

    caps: Mapping[str, Mapping[str, Cap]]
    quiet_hours: Mapping[str, QuietHours]


def default_policy() -> ContactPolicy:
    """The case-study defaults."""
    return ContactPolicy(
        caps={ch: dict(_ACTIVITY_CAPS) for ch in _CAPPED_CHANNELS},
        quiet_hours=dict(DEFAULT_QUIET_HOURS),
    )


def policy_to_dict(policy: ContactPolicy) -> dict[str, Any]:
    """The policy as stored and shown."""
    return {
        "caps": {
            ch: {
                a: {"max_contacts": c.max_contacts, "window_days": c.window_days}
                for a, c in by.items()
            }
            for ch, by in policy.caps.items()
        },
        "quiet_hours": {
            ch: {"start": q.start.strftime("%H:%M"), "end": q.end.strftime("%H:%M")}
            for ch, q in policy.quiet_hours.items()
        },
    }


def policy_from_dict(raw: Any) -> ContactPolicy:
    """A validated policy; InvalidDefinition names the path of every bad entry."""
    problems: list[Problem] = []
    caps: dict[str, dict[str, Cap]] = {}
    quiet: dict[str, QuietHours] = {}
    if not isinstance(raw, Mapping):
        raise InvalidDefinition([Problem("", "a policy is an object with caps and quiet_hours")])
    for ch, by in (raw.get("caps") or {}).items():
        if ch not in CHANNELS:
            problems.append(Problem(f"caps.{ch}", f"unknown channel {ch!r}"))
            continue
        if not isinstance(by, Mapping):
            problems.append(Problem(f"caps.{ch}", "caps per activity group are an object"))
            continue
        caps[ch] = {}
        for act, cap in by.items():
            path = f"caps.{ch}.{act}"
            if act not in ACTIVITY_LEVELS:
                problems.append(Problem(path, f"unknown activity group {act!r}"))
                continue
            m = cap.get("max_contacts") if isinstance(cap, Mapping) else None
            w = cap.get("window_days") if isinstance(cap, Mapping) else None
            if not (isinstance(m, int) and isinstance(w, int) and m >= 1 and 1 <= w <= 365):
                problems.append(Problem(path, "needs max_contacts ≥ 1 and window_days 1–365"))
                continue
            caps[ch][act] = Cap(m, w)
    for ch, q in (raw.get("quiet_hours") or {}).items():
        path = f"quiet_hours.{ch}"
        if ch not in CHANNELS:
            problems.append(Problem(path, f"unknown channel {ch!r}"))
            continue
        try:
            start = time.fromisoformat(q["start"])
            end = time.fromisoformat(q["end"])
        except (TypeError, KeyError, ValueError):
            problems.append(Problem(path, "needs start and end as HH:MM"))
            continue
        if start == end:
            problems.append(Problem(path, "start and end are the same time"))
            continue
        quiet[ch] = QuietHours(start, end)
    if problems:
        raise InvalidDefinition(problems)
    return ContactPolicy(caps=caps, quiet_hours=quiet)


def zone_of(province: str, default_zone: str) -> str:
    """The zone a province's subscribers live by."""
    return PROVINCE_ZONES.get(province, default_zone)


def quiet_provinces(
    policy: ContactPolicy,
    *,
    channel: str,
    at: datetime,
    provinces: Iterable[str],
    default_zone: str,
) -> frozenset[str]:
    """Provinces where `at` falls in the channel's quiet hours, by their subscribers' local time."""
    quiet = policy.quiet_hours.get(channel)
    if quiet is None:
        return frozenset()
    return frozenset(
        p
        for p in provinces
        if quiet.covers(at.astimezone(ZoneInfo(zone_of(p, default_zone))).time())
    )


# ---- self-service extraction -------------------------------------------------------------------


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


@dataclass(frozen=True)
class Template:
    """A saved extraction: which columns, of whom (a definition with parameters)."""

    name: str
    description: str
    columns: tuple[str, ...]
    definition: Mapping[str, Any]
    params: Mapping[str, ParamSpec]


EXPORT_FORMATS = ("csv", "parquet")
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def coerce_param(spec: ParamSpec, raw: Any) -> Any:
    """A parameter value of the declared type from JSON or from text; raises ValueError."""
    if spec.type == ParamType.STRING_LIST:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            raise ValueError("a comma-separated list of values")
        values = [str(v).strip() for v in items if str(v).strip()]
        if not values:
            raise ValueError("a comma-separated list of values")
        return values
    if spec.type == ParamType.STRING:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError("a text value")
        return raw.strip()
    if spec.type == ParamType.INTEGER:
        if isinstance(raw, bool):
            raise ValueError("a whole number")
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError("a whole number") from exc
    if spec.type == ParamType.NUMBER:
        if isinstance(raw, bool):
            raise ValueError("a number")
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError("a number") from exc
        if not math.isfinite(value):
            raise ValueError("a number")
        return value
    if isinstance(raw, date):
        return raw.isoformat()
    try:
        return date.fromisoformat(str(raw)).isoformat()
    except ValueError as exc:
        raise ValueError("a date YYYY-MM-DD") from exc


def parse_template(raw: Any, catalog: Catalog) -> Template:
    """A validated template; InvalidDefinition names the path of every bad part."""
    if not isinstance(raw, Mapping):
        raise InvalidDefinition([Problem("", "a template is an object")])
    problems: list[Problem] = []
    extra = sorted(set(raw) - {"name", "description", "columns", "rule", "exclude", "parameters"})
    if extra:
        problems.append(Problem("", f"unexpected key(s) {', '.join(map(str, extra))}"))
    name = raw.get("name")
    if not isinstance(name, str) or not TEMPLATE_NAME.fullmatch(name.strip() or "\x00"):
        problems.append(Problem("name", f"a name of 1 to {MAX_NAME} characters is required"))
        name = ""
    description = raw.get("description") or ""
    if not isinstance(description, str) or len(description) > 2000:
        problems.append(Problem("description", "text of at most 2000 characters"))
        description = ""
    columns = raw.get("columns")
    allowed = {*(set(catalog.columns) - catalog.feature_columns), PHONE_COLUMN}
    if not isinstance(columns, list) or not columns:
        problems.append(Problem("columns", "a non-empty list of columns to export"))
        columns = []
    for i, col in enumerate(columns):
        if col not in allowed:
            problems.append(
                Problem(
                    f"columns[{i}]",
                    f"unknown column {col!r} (known: {', '.join(sorted(allowed))})",
                    column=str(col),
                )
            )
    if len(set(map(str, columns))) != len(columns):
        problems.append(Problem("columns", "a column is listed twice"))
    params: dict[str, ParamSpec] = {}
    for i, p in enumerate(raw.get("parameters") or []):
        path = f"parameters[{i}]"
        if not isinstance(p, Mapping) or not isinstance(p.get("name"), str):
            problems.append(Problem(path, "a parameter is {name, type, default?, label?}"))
            continue
        pname = p["name"]
        if not _PARAM_NAME.fullmatch(pname) or pname in params:
            problems.append(Problem(f"{path}.name", f"bad or repeated parameter name {pname!r}"))
            continue
        try:
            ptype = ParamType(p.get("type", "string"))
        except ValueError:
            known = ", ".join(t.value for t in ParamType)
            problems.append(Problem(f"{path}.type", f"unknown type (known: {known})"))
            continue
        spec = ParamSpec(name=pname, type=ptype, label=str(p.get("label") or ""))
        if p.get("default") is not None:
            try:
                spec = ParamSpec(pname, ptype, coerce_param(spec, p["default"]), spec.label)
            except ValueError as exc:
                problems.append(Problem(f"{path}.default", f"expected {exc}"))
                continue
        params[pname] = spec
    definition = {k: raw[k] for k in ("rule", "exclude") if raw.get(k) is not None}
    try:
        parse_definition(definition, catalog, params=params)
    except InvalidDefinition as exc:
        problems.extend(exc.problems)
    if problems:
        raise InvalidDefinition(problems)
    return Template(
        name=name.strip(),
        description=description,
        columns=tuple(columns),
        definition=definition,
        params=params,
    )


def template_to_dict(template: Template) -> dict[str, Any]:
    """The template as stored."""
    out: dict[str, Any] = {
        "name": template.name,
        "description": template.description,
        "columns": list(template.columns),
        **template.definition,
    }
    if template.params:
        out["parameters"] = [
            {
                "name": p.name,
                "type": p.type.value,
                **({"default": p.default} if p.default is not None else {}),
                **({"label": p.label} if p.label else {}),
            }
            for p in template.params.values()
        ]
    return out


def bind_params(template: Template, given: Mapping[str, Any]) -> dict[str, Any]:
    """The template's definition with parameter values in place; InvalidDefinition if missing."""
    problems: list[Problem] = []
    unknown = sorted(set(given) - set(template.params))
    for name in unknown:
        problems.append(Problem(f"params.{name}", "not a parameter of this template"))
    values: dict[str, Any] = {}
    for name, spec in template.params.items():
        if name in given and given[name] not in (None, ""):
            try:
                values[name] = coerce_param(spec, given[name])
            except ValueError as exc:
                problems.append(Problem(f"params.{name}", f"expected {exc}"))
        elif spec.default is not None:
            values[name] = spec.default
        else:
            problems.append(Problem(f"params.{name}", "this parameter has no default; give it"))
    if problems:
        raise InvalidDefinition(problems)

    def sub(node: Any) -> Any:
        if isinstance(node, Mapping):
            if set(node) == {"param"}:
                return values[node["param"]]
            return {k: sub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v) for v in node]
        return node

    return sub(dict(template.definition))  # type: ignore[no-any-return]


def safe_filename(name: str) -> str:
    """A file name from a template name: letters, digits and dashes."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return slug[:40] or "extract"


# Rows one export may hold, per role; the system (CLI without --as) has no limit.
EXTRACT_ROW_LIMITS: dict[Role, int] = {Role.HQ_ADMIN: 5_000_000, Role.ANALYST: 1_000_000}


def row_limit(actor: Actor) -> int | None:
    """The most rows the actor may export at once (None: unlimited); 0 if none at all."""
    if actor.kind == "system":
        return None
    return EXTRACT_ROW_LIMITS.get(actor.role, 0) if actor.role is not None else 0


def load_text(text: str, *, filename: str = "") -> Any:
    """A definition or template from JSON or YAML text; InvalidDefinition if it is neither."""
    try:
        if filename.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if filename.endswith(".json") else "YAML or JSON"
        raise InvalidDefinition([Problem("", f"not valid {kind}: {exc}")]) from exc
