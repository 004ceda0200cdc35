"""Self-service extraction: templates with parameters, binding them, export limits."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from perkflow.audience.rules.parsing import parse_definition
from perkflow.audience.rules.tree import InvalidDefinition, ParamSpec, ParamType
from perkflow.audience.rules.vocabulary import MAX_NAME, Catalog
from perkflow.errors import Problem
from perkflow.org.rules import Actor, Role

TEMPLATE_NAME = re.compile(r"^[^\x00-\x1f]{1,120}$")
PHONE_COLUMN = "phone"


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
    at_fault: dict[Problem, Mapping[str, str]] = {}
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
            known = ", ".join(sorted(allowed))
            problem = Problem(f"columns[{i}]", f"unknown column {col!r} (known: {known})")
            problems.append(problem)
            at_fault[problem] = {"column": str(col)}
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
        at_fault.update(exc.at_fault)
    if problems:
        raise InvalidDefinition(problems, at_fault)
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
