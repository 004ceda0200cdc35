"""Spec validation: a spec parsed from JSON (a request or stored columns), each problem named."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any

from perkflow.errors import Problem

from .spec import (
    CAMPAIGN_CHANNELS,
    DEFAULT_LOCALE,
    EVENT_TYPES,
    GOAL_KINDS,
    LOCALES,
    MATCH_OPS,
    OFFER_KINDS,
    CampaignSpec,
    Condition,
    Goal,
    InvalidSpec,
    Offer,
    Schedule,
    Trigger,
    Variant,
)
from .templates import template_problem

MAX_VARIANTS = 20
MAX_BODY = 2000
MAX_SUBJECT = 200
MAX_WINDOW_DAYS = 90
MAX_SHARE_BP = 5_000
KEY = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _share_bp(raw: Any, *, path: str, bp: bool, upper_bp: int) -> tuple[int, Problem | None]:
    """A share given as percent (`10`, `"10%"`) or, under a `_bp` key, as basis points."""
    value = raw
    if isinstance(value, str) and not bp:
        text = value.strip().rstrip("%").strip()
        try:
            value = float(text)
        except ValueError:
            return 0, Problem(path, "a share is a number of percent, like 10")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0, Problem(path, "a share is a number")
    result = int(value) if bp else round(float(value) * 100)
    if bp and value != int(value):
        return 0, Problem(path, "basis points are whole numbers")
    if not 0 <= result <= upper_bp:
        return 0, Problem(path, f"must be between 0 and {upper_bp / 100:g} %")
    return result, None


def _when(raw: Any, path: str, problems: list[Problem]) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            problems.append(Problem(path, "an ISO time like 2026-12-01T09:00:00+08:00"))
            return None
    else:
        problems.append(Problem(path, "an ISO time like 2026-12-01T09:00:00+08:00"))
        return None
    if value.tzinfo is None:
        problems.append(Problem(path, "needs a time zone offset"))
        return None
    return value.astimezone(UTC)


def _positive_int(raw: Any, path: str, problems: list[Problem], *, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < low:
        problems.append(Problem(path, f"a whole number ≥ {low}"))
        return low
    return raw


def _conditions(
    raw: Any,
    path: str,
    problems: list[Problem],
    columns: Mapping[str, str] | None,
) -> tuple[Condition, ...]:
    """A list of {column, op, value}; `columns` (name → kind) checks names and types."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, list) or not items:
        problems.append(Problem(path, "a list of {column, op, value} conditions"))
        return ()
    out = []
    for i, item in enumerate(items):
        p = f"{path}[{i}]" if isinstance(raw, list) else path
        if not isinstance(item, Mapping):
            problems.append(Problem(p, "a condition is {column, op, value}"))
            continue
        column, op = item.get("column", item.get("attribute")), item.get("op", "=")
        value = item.get("value", item.get("values"))
        if not isinstance(column, str) or not column:
            problems.append(Problem(f"{p}.column", "name a column"))
            continue
        if columns is not None and column not in columns:
            known = ", ".join(sorted(columns)[:12])
            problems.append(Problem(f"{p}.column", f"unknown column {column!r} (known: {known}…)"))
            continue
        if op not in MATCH_OPS:
            problems.append(Problem(f"{p}.op", f"op is one of {' '.join(MATCH_OPS)}"))
            continue
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                problems.append(Problem(f"{p}.value", f"{op} takes a non-empty list"))
                continue
            value = tuple(value)
        elif value is None or isinstance(value, (list, dict)):
            problems.append(Problem(f"{p}.value", "a single value"))
            continue
        kind = columns.get(column) if columns is not None else None
        values = value if isinstance(value, tuple) else (value,)
        if kind in ("integer", "number") and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            problems.append(Problem(f"{p}.value", f"{column} is a number"))
            continue
        if kind == "string" and not all(isinstance(v, str) for v in values):
            problems.append(Problem(f"{p}.value", f"{column} is text"))
            continue
        out.append(Condition(column, op, value))
    return tuple(out)


def _slots(raw: Any, problems: list[Problem]) -> tuple[tuple[time, time], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem("schedule.slots", 'a list of ["HH:MM", "HH:MM"] pairs'))
        return ()
    out = []
    for i, slot in enumerate(raw):
        path = f"schedule.slots[{i}]"
        try:
            start, end = (time.fromisoformat(str(x)) for x in slot)
        except (TypeError, ValueError):
            problems.append(Problem(path, 'a pair ["HH:MM", "HH:MM"]'))
            continue
        if start >= end:
            problems.append(Problem(path, "a slot ends after it starts (same day)"))
            continue
        out.append((start, end))
    return tuple(sorted(out))


def parse_spec(raw: Any, *, columns: Mapping[str, str] | None = None) -> CampaignSpec:
    """A validated spec; InvalidSpec names the field of every problem.

    `columns` maps the profile's column names to their kinds (integer, number, string…), so a
    variant's match names only real columns.
    """
    if not isinstance(raw, Mapping):
        raise InvalidSpec([Problem("", "a campaign spec is an object")])
    problems: list[Problem] = []

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 120:
        problems.append(Problem("name", "1 to 120 characters"))
        name = ""

    trigger: Trigger | None = None
    if raw.get("trigger") is not None:
        t = raw["trigger"]
        if not isinstance(t, Mapping):
            problems.append(Problem("trigger", "an object with events and where"))
        else:
            events = t.get("events")
            if isinstance(events, str):
                events = [events]
            if not isinstance(events, list) or not events:
                problems.append(Problem("trigger.events", "a list of event types"))
                events = []
            bad = [e for e in events if e not in EVENT_TYPES]
            if bad:
                problems.append(
                    Problem(
                        "trigger.events",
                        f"unknown event {bad[0]!r} (one of {', '.join(EVENT_TYPES)})",
                    )
                )
            where = _conditions(t.get("where"), "trigger.where", problems, None)
            trigger = Trigger(events=tuple(dict.fromkeys(events)), where=where)

    segment_id = raw.get("segment_id")
    if segment_id is not None and (isinstance(segment_id, bool) or not isinstance(segment_id, int)):
        problems.append(Problem("segment_id", "a segment id"))
        segment_id = None
    if segment_id is None and trigger is None:
        problems.append(Problem("segment_id", "a batch campaign needs a segment"))

    g = raw.get("goal")
    goal = Goal("any", 14)
    if not isinstance(g, Mapping):
        problems.append(Problem("goal", "an object with kind and window_days"))
    else:
        kind = g.get("kind")
        if kind not in GOAL_KINDS:
            problems.append(Problem("goal.kind", f"one of {', '.join(GOAL_KINDS)}"))
            kind = "any"
        window = g.get("window_days", 14)
        if (
            isinstance(window, bool)
            or not isinstance(window, int)
            or not 1 <= window <= MAX_WINDOW_DAYS
        ):
            problems.append(Problem("goal.window_days", f"1 to {MAX_WINDOW_DAYS} days"))
            window = 14
        goal = Goal(str(kind), window)

    o = raw.get("offer") or {"kind": "none"}
    offer = Offer("none")
    if not isinstance(o, Mapping):
        problems.append(Problem("offer", "an object with kind, id, category, cost_fen"))
    else:
        okind = o.get("kind", "none")
        if okind not in OFFER_KINDS:
            problems.append(Problem("offer.kind", f"one of {', '.join(OFFER_KINDS)}"))
            okind = "none"
        oid = o.get("id")
        if okind != "none" and (isinstance(oid, bool) or not isinstance(oid, int) or oid < 1):
            problems.append(Problem("offer.id", f"the id of the {okind}"))
            oid = None
        category = o.get("category")
        if category is not None and (not isinstance(category, str) or len(category) > 32):
            problems.append(Problem("offer.category", "a category name"))
            category = None
        cost = o.get("cost_fen", 0)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            problems.append(Problem("offer.cost_fen", "whole fen ≥ 0"))
            cost = 0
        oname = o.get("name", "")
        offer = Offer(
            str(okind),
            oid if okind != "none" else None,
            category,
            cost,
            oname if isinstance(oname, str) else "",
        )

    variants: list[Variant] = []
    raw_variants = raw.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        problems.append(Problem("variants", "at least one content variant"))
        raw_variants = []
    elif len(raw_variants) > MAX_VARIANTS:
        problems.append(Problem("variants", f"at most {MAX_VARIANTS} variants"))
    seen: set[str] = set()
    # The campaign's language is its variants' unless a variant says otherwise.
    default_locale = raw.get("locale", DEFAULT_LOCALE)
    if default_locale not in LOCALES:
        problems.append(Problem("locale", f"one of {', '.join(LOCALES)}"))
        default_locale = DEFAULT_LOCALE
    for i, v in enumerate(raw_variants[:MAX_VARIANTS]):
        p = f"variants[{i}]"
        if not isinstance(v, Mapping):
            problems.append(Problem(p, "a variant is an object"))
            continue
        key = v.get("key", chr(ord("A") + i))
        if not isinstance(key, str) or not KEY.fullmatch(key):
            problems.append(Problem(f"{p}.key", "1–32 letters, digits, _ or -"))
        elif key in seen:
            problems.append(Problem(f"{p}.key", f"key {key!r} is used twice"))
        seen.add(str(key))
        channel = v.get("channel")
        if channel not in CAMPAIGN_CHANNELS:
            problems.append(Problem(f"{p}.channel", f"one of {', '.join(CAMPAIGN_CHANNELS)}"))
        subject = v.get("subject", "")
        if not isinstance(subject, str) or len(subject) > MAX_SUBJECT:
            problems.append(Problem(f"{p}.subject", f"text up to {MAX_SUBJECT} characters"))
            subject = ""
        elif why := template_problem(subject):
            problems.append(Problem(f"{p}.subject", why))
        body = v.get("body")
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY:
            problems.append(Problem(f"{p}.body", f"1 to {MAX_BODY} characters"))
            body = ""
        elif why := template_problem(body):
            problems.append(Problem(f"{p}.body", why))
        match = _conditions(v.get("match"), f"{p}.match", problems, columns)
        if not match and v.get("match") is None and i < len(raw_variants) - 1:
            problems.append(
                Problem(f"{p}.match", "only the last variant may have no match (the default)")
            )
        locale = v.get("locale", default_locale)
        if locale not in LOCALES:
            problems.append(Problem(f"{p}.locale", f"one of {', '.join(LOCALES)}"))
            locale = DEFAULT_LOCALE
        variants.append(Variant(str(key), str(channel), subject, body, match, str(locale)))

    sch = raw.get("schedule") or {}
    schedule = Schedule()
    if not isinstance(sch, Mapping):
        problems.append(Problem("schedule", "an object"))
    else:
        starts = _when(sch.get("starts_at"), "schedule.starts_at", problems)
        ends = _when(sch.get("ends_at"), "schedule.ends_at", problems)
        if starts and ends and ends <= starts:
            problems.append(Problem("schedule.ends_at", "ends after it starts"))
        days = sch.get("weekdays", list(range(1, 8)))
        if (
            not isinstance(days, list)
            or not days
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
        ):
            problems.append(Problem("schedule.weekdays", "a list of ISO weekdays 1 (Mon)–7 (Sun)"))
            days = list(range(1, 8))
        skip = sch.get("skip_holidays", False)
        if not isinstance(skip, bool):
            problems.append(Problem("schedule.skip_holidays", "true or false"))
            skip = False
        schedule = Schedule(starts, ends, frozenset(days), _slots(sch.get("slots"), problems), skip)

    if "control_share_bp" in raw:
        control, problem = _share_bp(
            raw["control_share_bp"], path="control_share", bp=True, upper_bp=MAX_SHARE_BP
        )
    else:
        control, problem = _share_bp(
            raw.get("control_share", 10), path="control_share", bp=False, upper_bp=MAX_SHARE_BP
        )
    if problem:
        problems.append(problem)
    if "test_share_bp" in raw:
        test, problem = _share_bp(
            raw["test_share_bp"], path="test_share", bp=True, upper_bp=MAX_SHARE_BP
        )
    else:
        test, problem = _share_bp(
            raw.get("test_share", 0), path="test_share", bp=False, upper_bp=MAX_SHARE_BP
        )
    if problem:
        problems.append(problem)
    if trigger is not None and test:
        problems.append(Problem("test_share", "a trigger campaign has no test wave"))

    throttle: dict[str, int] = {}
    th = raw.get("throttle") or {}
    if not isinstance(th, Mapping):
        problems.append(Problem("throttle", "messages per second per channel"))
    else:
        for ch, rate in th.items():
            if ch not in CAMPAIGN_CHANNELS:
                problems.append(Problem(f"throttle.{ch}", "unknown channel"))
            elif isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 100_000:
                problems.append(Problem(f"throttle.{ch}", "1 to 100000 messages per second"))
            else:
                throttle[str(ch)] = rate

    budget = raw.get("budget_fen")
    if budget is not None:
        budget = _positive_int(budget, "budget_fen", problems)
        if offer.cost_fen == 0 and offer.kind != "none":
            problems.append(Problem("offer.cost_fen", "a budget needs the offer's cost"))
    stock = raw.get("stock_cap")
    if stock is not None:
        stock = _positive_int(stock, "stock_cap", problems)

    if problems:
        raise InvalidSpec(problems)
    return CampaignSpec(
        name=str(name).strip(),
        segment_id=segment_id,
        goal=goal,
        offer=offer,
        variants=tuple(variants),
        schedule=schedule,
        control_share_bp=control,
        test_share_bp=test,
        throttle=throttle,
        budget_fen=budget,
        stock_cap=stock,
        trigger=trigger,
    )


def spec_of(row: Mapping[str, Any]) -> CampaignSpec:
    """The spec back from stored column values (they were validated when saved)."""
    raw = dict(row)
    raw.pop("control_share", None)
    raw.pop("test_share", None)
    return parse_spec(raw)
