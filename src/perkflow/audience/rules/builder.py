"""The console's simple builder: rows of (column, op, text) to a raw definition and back."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from perkflow.audience.rules.canonical import json_key
from perkflow.audience.rules.tree import InvalidDefinition
from perkflow.audience.rules.vocabulary import (
    EXCLUSION_SHORTCUTS,
    LIST_OPS,
    NULL_OPS,
    OPS,
    Catalog,
    ColumnSpec,
    Kind,
)
from perkflow.errors import Problem


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
    at_fault: dict[Problem, dict[str, str]] = {}
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
            problem = Problem(f"{path}.value", str(exc))
            problems.append(problem)
            at_fault[problem] = {"column": column, "op": op}
    if problems:
        raise InvalidDefinition(problems, at_fault)
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
