"""Parsing and validation: raw JSON or YAML to a Definition, or every problem by its path."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, TypeGuard

import yaml

from perkflow.audience.rules.tree import (
    All,
    AnyOf,
    Between,
    Compare,
    Contacted,
    Definition,
    InList,
    InvalidDefinition,
    MemberOf,
    Node,
    Not,
    NullCheck,
    OnList,
    ParamRef,
    ParamSpec,
    ParamType,
    Responded,
    Score,
    Value,
)
from perkflow.audience.rules.vocabulary import (
    CHANNELS,
    COMPARE_OPS,
    EXCLUSION_SHORTCUTS,
    LIST_KINDS,
    LIST_OPS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_NODES,
    NULL_OPS,
    NUMERIC,
    OPS,
    ORDER_OPS,
    ORDERED,
    Catalog,
    ColumnSpec,
    Kind,
)
from perkflow.errors import Problem


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
        self.at_fault: dict[Problem, dict[str, str]] = {}
        self.nodes = 0

    def bad(self, path: str, message: str, **where: str | None) -> None:
        """Record a problem; `where` names the rule's column and op when they are at fault."""
        problem = Problem(path, message)
        self.problems.append(problem)
        culprit = {k: v for k, v in where.items() if v}
        if culprit:
            self.at_fault[problem] = culprit

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
        raise InvalidDefinition(parser.problems, parser.at_fault)
    return Definition(rule=rule, exclude=tuple(excludes))


def load_text(text: str, *, filename: str = "") -> Any:
    """A definition or template from JSON or YAML text; InvalidDefinition if it is neither."""
    try:
        if filename.endswith(".json"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if filename.endswith(".json") else "YAML or JSON"
        raise InvalidDefinition([Problem("", f"not valid {kind}: {exc}")]) from exc
