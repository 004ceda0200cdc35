"""The canonical stored form of a definition, and walking its nodes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from perkflow.audience.rules.tree import (
    All,
    AnyOf,
    Between,
    Compare,
    Contacted,
    Definition,
    InList,
    MemberOf,
    Node,
    Not,
    NullCheck,
    OnList,
    ParamRef,
    Responded,
    Score,
)


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


def json_key(value: Any) -> str:
    """A hashable, order-independent key of a JSON value."""
    return json.dumps(value, sort_keys=True, default=str)
