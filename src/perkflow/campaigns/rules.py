"""Campaign vocabulary and pure checks: statuses, cells, imported history rows."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from perkflow.kit.lazy import lazy_module

if TYPE_CHECKING:
    import holidays
else:
    holidays = lazy_module("holidays")


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class CampaignKind(StrEnum):
    BATCH = "batch"
    TRIGGER = "trigger"
    IMPORTED = "imported"


class WaveKind(StrEnum):
    TEST = "test"
    ROLLOUT = "rollout"
    TRIGGER = "trigger"
    IMPORTED = "imported"


class ContactStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"  # a control-cell subscriber: recorded, never sent
    SUPPRESSED = "suppressed"  # dropped at dispatch (opt-out since the list was built...)


class Cell(StrEnum):
    TARGET = "target"
    CONTROL = "control"


# Contacts that count in an evaluation: everyone assigned and not dropped before sending, so the
# target cell is judged by intent (a failed send still counts) exactly like the held-back control.
EVALUATED = frozenset(
    {
        ContactStatus.QUEUED,
        ContactStatus.SENDING,
        ContactStatus.SENT,
        ContactStatus.DELIVERED,
        ContactStatus.FAILED,
        ContactStatus.HELD,
    }
)

# An evaluation counts every assigned row (intent to treat): a target dropped at send time (a later
# opt-out, the budget or stock cap, the schedule's end, an early finish) stays in its cell, as its
# held-back control twin does. Only rows no variant matched were never part of the experiment:
# neither cell could have been sent anything.
NOT_ASSIGNED_REASONS = frozenset({"no_variant"})
# Target rows whose message went out: what treated-on-treated compares with the control.
TREATED = frozenset({ContactStatus.SENT, ContactStatus.DELIVERED})


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One line of an imported campaign history (a past campaign run elsewhere)."""

    subscriber_id: int
    cell: Cell
    variant: str | None
    contacted_at: datetime
    responded: bool
    revenue_fen: int | None
    phone: str | None = None  # an optional `phone` column, for matching to the subscriber master


# An import source names an outside system's id space: lower-case, a letter first.
IMPORT_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def outside_id(source_id: int) -> int:
    """How an unmatched outside id is stored: negated, so it is never a subscriber of ours."""
    return -source_id


@dataclass(frozen=True, slots=True)
class CellCount:
    """Contacts, responders and revenue of one (cell, variant, province) group of a campaign."""

    cell: str
    variant: str | None
    province_code: str | None
    contacts: int
    responders: int
    revenue_fen: int
    # The contacts of the group whose message went out (sent or delivered), and theirs: what a
    # treated-on-treated comparison reads. Control rows are never sent, so 0 there.
    treated: int = 0
    treated_responders: int = 0
    treated_revenue_fen: int = 0
    # For the revenue interval: contacts whose revenue (their responses summed) is above zero,
    # and the sum over contacts of that revenue squared (fen²); None where not counted.
    spenders: int | None = None
    revenue_sq_fen2: int | None = None
    treated_spenders: int | None = None
    treated_revenue_sq_fen2: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseTime:
    """When one contact first responded (for cumulative charts)."""

    cell: str
    variant: str | None
    responded_at: datetime


# ---- lifecycle ---------------------------------------------------------------------------------


class Action(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"


# (from, action) → to. Anything not listed is refused with 409; editing is allowed in draft only.
TRANSITIONS: dict[tuple[CampaignStatus, Action], CampaignStatus] = {
    (CampaignStatus.DRAFT, Action.SUBMIT): CampaignStatus.PENDING_APPROVAL,
    (CampaignStatus.PENDING_APPROVAL, Action.APPROVE): CampaignStatus.APPROVED,
    (CampaignStatus.PENDING_APPROVAL, Action.REJECT): CampaignStatus.DRAFT,
    (CampaignStatus.APPROVED, Action.START): CampaignStatus.RUNNING,
    (CampaignStatus.RUNNING, Action.PAUSE): CampaignStatus.PAUSED,
    (CampaignStatus.PAUSED, Action.RESUME): CampaignStatus.RUNNING,
    (CampaignStatus.RUNNING, Action.FINISH): CampaignStatus.FINISHED,
    (CampaignStatus.PAUSED, Action.FINISH): CampaignStatus.FINISHED,
    (CampaignStatus.APPROVED, Action.FINISH): CampaignStatus.FINISHED,
}


def next_status(status: str, action: Action) -> CampaignStatus | None:
    """Where an action takes a campaign from `status`, or None when it may not."""
    try:
        return TRANSITIONS.get((CampaignStatus(status), action))
    except ValueError:
        return None


class WaveStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    DONE = "done"


# Contacts that still hold a message to send; a wave with none left is done.
OPEN = frozenset({ContactStatus.QUEUED, ContactStatus.SENDING})
# Contacts a message went out to (or is going out to): what frequency caps and budgets count.
CONTACTED = frozenset({ContactStatus.SENDING, ContactStatus.SENT, ContactStatus.DELIVERED})


def backoff_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 600.0) -> float:
    """Seconds before the next attempt after `attempts` failed ones: base, 2×base, 4×base …"""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


# ---- the campaign spec -------------------------------------------------------------------------

GOAL_KINDS = ("claim", "redemption", "grant_use", "order", "any")
RESPONSE_KINDS = ("claim", "redemption", "grant_use", "order")
OFFER_KINDS = ("coupon_batch", "benefit", "none")
# The campaign's channels; the audience's contact policy calls a webhook push "push".
CAMPAIGN_CHANNELS = ("sms", "email", "webhook", "in_app")
POLICY_CHANNEL = {"sms": "sms", "email": "email", "webhook": "push", "in_app": "in_app"}
EVENT_TYPES = ("data_threshold", "contract_expiring", "recharge", "plan_change", "arrears")
MATCH_OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "not_in")
# What a template may use; the values are filled from the profile, the offer and the ledger.
FIELDS = ("plan_fee_yuan", "province", "city", "offer_name", "masked_phone", "campaign_name")
SAMPLE_FIELDS: dict[str, Any] = {
    "plan_fee_yuan": 79,
    "province": "广东",
    "city": "广州",
    "offer_name": "视频会员月卡",
    "masked_phone": "138****1234",
    "campaign_name": "campaign",
}
# A message's language: region fields are filled with names in it. Without one, zh_CN.
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
# Fields that hold a region code in a contact's row and a region's name in the message.
REGION_FIELDS = ("province", "city")
# How copy names a region: 广东 for 广东省, 广西 for 广西壮族自治区, 广州 for 广州市.
_ZH_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")
MAX_VARIANTS = 20
MAX_BODY = 2000
MAX_SUBJECT = 200
MAX_WINDOW_DAYS = 90
MAX_SHARE_BP = 5_000
BASIS_POINTS = 10_000
KEY = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One thing wrong with a spec, at a dotted path (`variants[1].body`)."""

    path: str
    message: str


class InvalidSpec(ValueError):
    """A spec with problems; the first names the field of the 422."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(f"{first.path}: {first.message}{more}")


@dataclass(frozen=True, slots=True)
class Condition:
    """`column op value` over a profile column (variant match) or an event attribute (where)."""

    column: str
    op: str
    value: Any

    def holds(self, row: Mapping[str, Any]) -> bool:
        """Whether a row satisfies it; a missing value satisfies nothing."""
        have = row.get(self.column)
        if have is None:
            return False
        try:
            if self.op == "=":
                return bool(have == self.value)
            if self.op == "!=":
                return bool(have != self.value)
            if self.op == "in":
                return have in self.value
            if self.op == "not_in":
                return have not in self.value
            if self.op == "<":
                return bool(have < self.value)
            if self.op == "<=":
                return bool(have <= self.value)
            if self.op == ">":
                return bool(have > self.value)
            return bool(have >= self.value)
        except TypeError:
            return False


@dataclass(frozen=True, slots=True)
class Variant:
    """One content variant: its channel, texts and who gets it (no conditions: everyone left)."""

    key: str
    channel: str
    subject: str
    body: str
    match: tuple[Condition, ...]
    locale: str = DEFAULT_LOCALE


@dataclass(frozen=True, slots=True)
class Goal:
    kind: str
    window_days: int


@dataclass(frozen=True, slots=True)
class Offer:
    kind: str
    id: int | None = None
    category: str | None = None
    cost_fen: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class Schedule:
    """When messages may go out, in the operator's zone."""

    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekdays: frozenset[int] = frozenset(range(1, 8))  # ISO: Monday 1 … Sunday 7
    slots: tuple[tuple[time, time], ...] = ()  # empty: any time of day
    skip_holidays: bool = False


@dataclass(frozen=True, slots=True)
class Trigger:
    events: tuple[str, ...]
    where: tuple[Condition, ...] = ()

    def fires(self, event_type: str, attributes: Mapping[str, Any]) -> bool:
        """Whether an event starts this campaign for its subscriber."""
        return event_type in self.events and all(c.holds(attributes) for c in self.where)


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A validated campaign definition."""

    name: str
    segment_id: int | None
    goal: Goal
    offer: Offer
    variants: tuple[Variant, ...]
    schedule: Schedule
    control_share_bp: int
    test_share_bp: int
    throttle: Mapping[str, int]
    budget_fen: int | None
    stock_cap: int | None
    trigger: Trigger | None

    @property
    def kind(self) -> CampaignKind:
        return CampaignKind.TRIGGER if self.trigger is not None else CampaignKind.BATCH

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.channel for v in self.variants))


def template_env() -> SandboxedEnvironment:
    """Jinja in a sandbox: no attribute tricks, an unknown name is an error, not an empty string."""
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


_ENV = template_env()


def template_problem(source: str) -> str | None:
    """Why a template cannot be used (syntax, unknown field, fails on sample values), or None."""
    try:
        parsed = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(FIELDS))
    if unknown:
        return f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})"
    try:
        _ENV.from_string(source).render(**SAMPLE_FIELDS)
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        return f"template fails on sample values: {exc}"
    return None


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Compiling costs ~0.5 ms; a campaign has a handful of templates and renders them per contact.
    return _ENV.from_string(source)


@lru_cache(maxsize=256)
def template_fields(source: str) -> frozenset[str]:
    """The fields a template reads; its text depends on their values alone."""
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def short_name_zh(name: str) -> str:
    """A region's Chinese name as a message says it (广东省 → 广东, 广州市 → 广州)."""
    for suffix in _ZH_SUFFIXES:
        if name.endswith(suffix) and len(name) - len(suffix) >= 2:
            return name[: -len(suffix)]
    return name


def region_names(regions: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """code → locale → name, from (code, Chinese name, English name) of the region tree."""
    return {code: {"zh_CN": short_name_zh(zh), "en": en} for code, zh, en in regions}


def message_fields(
    fields: Mapping[str, Any], *, regions: Mapping[str, Mapping[str, str]], locale: str
) -> dict[str, Any]:
    """A contact's fields as its message shows them: region codes become names in its language."""
    out = dict(fields)
    for name in REGION_FIELDS:
        code = out.get(name)
        if isinstance(code, str) and code in regions:
            out[name] = regions[code].get(locale) or regions[code].get(DEFAULT_LOCALE) or code
    return out


def render(source: str, fields: Mapping[str, Any]) -> str:
    """Render a validated template with a subscriber's fields."""
    return _compiled(source).render(**{**SAMPLE_FIELDS, **fields})


def _share_bp(raw: Any, *, path: str, bp: bool, upper_bp: int) -> tuple[int, SpecProblem | None]:
    """A share given as percent (`10`, `"10%"`) or, under a `_bp` key, as basis points."""
    value = raw
    if isinstance(value, str) and not bp:
        text = value.strip().rstrip("%").strip()
        try:
            value = float(text)
        except ValueError:
            return 0, SpecProblem(path, "a share is a number of percent, like 10")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0, SpecProblem(path, "a share is a number")
    result = int(value) if bp else round(float(value) * 100)
    if bp and value != int(value):
        return 0, SpecProblem(path, "basis points are whole numbers")
    if not 0 <= result <= upper_bp:
        return 0, SpecProblem(path, f"must be between 0 and {upper_bp / 100:g} %")
    return result, None


def _when(raw: Any, path: str, problems: list[SpecProblem]) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            problems.append(SpecProblem(path, "an ISO time like 2026-12-01T09:00:00+08:00"))
            return None
    else:
        problems.append(SpecProblem(path, "an ISO time like 2026-12-01T09:00:00+08:00"))
        return None
    if value.tzinfo is None:
        problems.append(SpecProblem(path, "needs a time zone offset"))
        return None
    return value.astimezone(UTC)


def _positive_int(raw: Any, path: str, problems: list[SpecProblem], *, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < low:
        problems.append(SpecProblem(path, f"a whole number ≥ {low}"))
        return low
    return raw


def _conditions(
    raw: Any,
    path: str,
    problems: list[SpecProblem],
    columns: Mapping[str, str] | None,
) -> tuple[Condition, ...]:
    """A list of {column, op, value}; `columns` (name → kind) checks names and types."""
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, list) or not items:
        problems.append(SpecProblem(path, "a list of {column, op, value} conditions"))
        return ()
    out = []
    for i, item in enumerate(items):
        p = f"{path}[{i}]" if isinstance(raw, list) else path
        if not isinstance(item, Mapping):
            problems.append(SpecProblem(p, "a condition is {column, op, value}"))
            continue
        column, op = item.get("column", item.get("attribute")), item.get("op", "=")
        value = item.get("value", item.get("values"))
        if not isinstance(column, str) or not column:
            problems.append(SpecProblem(f"{p}.column", "name a column"))
            continue
        if columns is not None and column not in columns:
            known = ", ".join(sorted(columns)[:12])
            problems.append(
                SpecProblem(f"{p}.column", f"unknown column {column!r} (known: {known}…)")
            )
            continue
        if op not in MATCH_OPS:
            problems.append(SpecProblem(f"{p}.op", f"op is one of {' '.join(MATCH_OPS)}"))
            continue
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                problems.append(SpecProblem(f"{p}.value", f"{op} takes a non-empty list"))
                continue
            value = tuple(value)
        elif value is None or isinstance(value, (list, dict)):
            problems.append(SpecProblem(f"{p}.value", "a single value"))
            continue
        kind = columns.get(column) if columns is not None else None
        values = value if isinstance(value, tuple) else (value,)
        if kind in ("integer", "number") and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            problems.append(SpecProblem(f"{p}.value", f"{column} is a number"))
            continue
        if kind == "string" and not all(isinstance(v, str) for v in values):
            problems.append(SpecProblem(f"{p}.value", f"{column} is text"))
            continue
        out.append(Condition(column, op, value))
    return tuple(out)


def _slots(raw: Any, problems: list[SpecProblem]) -> tuple[tuple[time, time], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(SpecProblem("schedule.slots", 'a list of ["HH:MM", "HH:MM"] pairs'))
        return ()
    out = []
    for i, slot in enumerate(raw):
        path = f"schedule.slots[{i}]"
        try:
            start, end = (time.fromisoformat(str(x)) for x in slot)
        except (TypeError, ValueError):
            problems.append(SpecProblem(path, 'a pair ["HH:MM", "HH:MM"]'))
            continue
        if start >= end:
            problems.append(SpecProblem(path, "a slot ends after it starts (same day)"))
            continue
        out.append((start, end))
    return tuple(sorted(out))


def parse_spec(raw: Any, *, columns: Mapping[str, str] | None = None) -> CampaignSpec:
    """A validated spec; InvalidSpec names the field of every problem.

    `columns` maps the profile's column names to their kinds (integer, number, string…), so a
    variant's match names only real columns.
    """
    if not isinstance(raw, Mapping):
        raise InvalidSpec([SpecProblem("", "a campaign spec is an object")])
    problems: list[SpecProblem] = []

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 120:
        problems.append(SpecProblem("name", "1 to 120 characters"))
        name = ""

    trigger: Trigger | None = None
    if raw.get("trigger") is not None:
        t = raw["trigger"]
        if not isinstance(t, Mapping):
            problems.append(SpecProblem("trigger", "an object with events and where"))
        else:
            events = t.get("events")
            if isinstance(events, str):
                events = [events]
            if not isinstance(events, list) or not events:
                problems.append(SpecProblem("trigger.events", "a list of event types"))
                events = []
            bad = [e for e in events if e not in EVENT_TYPES]
            if bad:
                problems.append(
                    SpecProblem(
                        "trigger.events",
                        f"unknown event {bad[0]!r} (one of {', '.join(EVENT_TYPES)})",
                    )
                )
            where = _conditions(t.get("where"), "trigger.where", problems, None)
            trigger = Trigger(events=tuple(dict.fromkeys(events)), where=where)

    segment_id = raw.get("segment_id")
    if segment_id is not None and (isinstance(segment_id, bool) or not isinstance(segment_id, int)):
        problems.append(SpecProblem("segment_id", "a segment id"))
        segment_id = None
    if segment_id is None and trigger is None:
        problems.append(SpecProblem("segment_id", "a batch campaign needs a segment"))

    g = raw.get("goal")
    goal = Goal("any", 14)
    if not isinstance(g, Mapping):
        problems.append(SpecProblem("goal", "an object with kind and window_days"))
    else:
        kind = g.get("kind")
        if kind not in GOAL_KINDS:
            problems.append(SpecProblem("goal.kind", f"one of {', '.join(GOAL_KINDS)}"))
            kind = "any"
        window = g.get("window_days", 14)
        if (
            isinstance(window, bool)
            or not isinstance(window, int)
            or not 1 <= window <= MAX_WINDOW_DAYS
        ):
            problems.append(SpecProblem("goal.window_days", f"1 to {MAX_WINDOW_DAYS} days"))
            window = 14
        goal = Goal(str(kind), window)

    o = raw.get("offer") or {"kind": "none"}
    offer = Offer("none")
    if not isinstance(o, Mapping):
        problems.append(SpecProblem("offer", "an object with kind, id, category, cost_fen"))
    else:
        okind = o.get("kind", "none")
        if okind not in OFFER_KINDS:
            problems.append(SpecProblem("offer.kind", f"one of {', '.join(OFFER_KINDS)}"))
            okind = "none"
        oid = o.get("id")
        if okind != "none" and (isinstance(oid, bool) or not isinstance(oid, int) or oid < 1):
            problems.append(SpecProblem("offer.id", f"the id of the {okind}"))
            oid = None
        category = o.get("category")
        if category is not None and (not isinstance(category, str) or len(category) > 32):
            problems.append(SpecProblem("offer.category", "a category name"))
            category = None
        cost = o.get("cost_fen", 0)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            problems.append(SpecProblem("offer.cost_fen", "whole fen ≥ 0"))
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
        problems.append(SpecProblem("variants", "at least one content variant"))
        raw_variants = []
    elif len(raw_variants) > MAX_VARIANTS:
        problems.append(SpecProblem("variants", f"at most {MAX_VARIANTS} variants"))
    seen: set[str] = set()
    # The campaign's language is its variants' unless a variant says otherwise.
    default_locale = raw.get("locale", DEFAULT_LOCALE)
    if default_locale not in LOCALES:
        problems.append(SpecProblem("locale", f"one of {', '.join(LOCALES)}"))
        default_locale = DEFAULT_LOCALE
    for i, v in enumerate(raw_variants[:MAX_VARIANTS]):
        p = f"variants[{i}]"
        if not isinstance(v, Mapping):
            problems.append(SpecProblem(p, "a variant is an object"))
            continue
        key = v.get("key", chr(ord("A") + i))
        if not isinstance(key, str) or not KEY.fullmatch(key):
            problems.append(SpecProblem(f"{p}.key", "1–32 letters, digits, _ or -"))
        elif key in seen:
            problems.append(SpecProblem(f"{p}.key", f"key {key!r} is used twice"))
        seen.add(str(key))
        channel = v.get("channel")
        if channel not in CAMPAIGN_CHANNELS:
            problems.append(SpecProblem(f"{p}.channel", f"one of {', '.join(CAMPAIGN_CHANNELS)}"))
        subject = v.get("subject", "")
        if not isinstance(subject, str) or len(subject) > MAX_SUBJECT:
            problems.append(SpecProblem(f"{p}.subject", f"text up to {MAX_SUBJECT} characters"))
            subject = ""
        elif why := template_problem(subject):
            problems.append(SpecProblem(f"{p}.subject", why))
        body = v.get("body")
        if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY:
            problems.append(SpecProblem(f"{p}.body", f"1 to {MAX_BODY} characters"))
            body = ""
        elif why := template_problem(body):
            problems.append(SpecProblem(f"{p}.body", why))
        match = _conditions(v.get("match"), f"{p}.match", problems, columns)
        if not match and v.get("match") is None and i < len(raw_variants) - 1:
            problems.append(
                SpecProblem(f"{p}.match", "only the last variant may have no match (the default)")
            )
        locale = v.get("locale", default_locale)
        if locale not in LOCALES:
            problems.append(SpecProblem(f"{p}.locale", f"one of {', '.join(LOCALES)}"))
            locale = DEFAULT_LOCALE
        variants.append(Variant(str(key), str(channel), subject, body, match, str(locale)))

    sch = raw.get("schedule") or {}
    schedule = Schedule()
    if not isinstance(sch, Mapping):
        problems.append(SpecProblem("schedule", "an object"))
    else:
        starts = _when(sch.get("starts_at"), "schedule.starts_at", problems)
        ends = _when(sch.get("ends_at"), "schedule.ends_at", problems)
        if starts and ends and ends <= starts:
            problems.append(SpecProblem("schedule.ends_at", "ends after it starts"))
        days = sch.get("weekdays", list(range(1, 8)))
        if (
            not isinstance(days, list)
            or not days
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
        ):
            problems.append(
                SpecProblem("schedule.weekdays", "a list of ISO weekdays 1 (Mon)–7 (Sun)")
            )
            days = list(range(1, 8))
        skip = sch.get("skip_holidays", False)
        if not isinstance(skip, bool):
            problems.append(SpecProblem("schedule.skip_holidays", "true or false"))
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
        problems.append(SpecProblem("test_share", "a trigger campaign has no test wave"))

    throttle: dict[str, int] = {}
    th = raw.get("throttle") or {}
    if not isinstance(th, Mapping):
        problems.append(SpecProblem("throttle", "messages per second per channel"))
    else:
        for ch, rate in th.items():
            if ch not in CAMPAIGN_CHANNELS:
                problems.append(SpecProblem(f"throttle.{ch}", "unknown channel"))
            elif isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 100_000:
                problems.append(SpecProblem(f"throttle.{ch}", "1 to 100000 messages per second"))
            else:
                throttle[str(ch)] = rate

    budget = raw.get("budget_fen")
    if budget is not None:
        budget = _positive_int(budget, "budget_fen", problems)
        if offer.cost_fen == 0 and offer.kind != "none":
            problems.append(SpecProblem("offer.cost_fen", "a budget needs the offer's cost"))
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


def _dump_conditions(conds: Sequence[Condition]) -> list[dict[str, Any]] | None:
    if not conds:
        return None
    return [
        {
            "column": c.column,
            "op": c.op,
            "value": list(c.value) if isinstance(c.value, tuple) else c.value,
        }
        for c in conds
    ]


def spec_columns(spec: CampaignSpec) -> dict[str, Any]:
    """The spec as the campaign row's column values (JSON parts in their stored form)."""
    s = spec.schedule
    return {
        "name": spec.name,
        "kind": spec.kind.value,
        "segment_id": spec.segment_id,
        "goal": {"kind": spec.goal.kind, "window_days": spec.goal.window_days},
        "offer": {
            "kind": spec.offer.kind,
            "id": spec.offer.id,
            "category": spec.offer.category,
            "cost_fen": spec.offer.cost_fen,
            "name": spec.offer.name,
        },
        "variants": [
            {
                "key": v.key,
                "channel": v.channel,
                "subject": v.subject,
                "body": v.body,
                "match": _dump_conditions(v.match),
                "locale": v.locale,
            }
            for v in spec.variants
        ],
        "schedule": {
            "starts_at": s.starts_at.isoformat() if s.starts_at else None,
            "ends_at": s.ends_at.isoformat() if s.ends_at else None,
            "weekdays": sorted(s.weekdays),
            "slots": [[a.strftime("%H:%M"), b.strftime("%H:%M")] for a, b in s.slots],
            "skip_holidays": s.skip_holidays,
        },
        "throttle": dict(spec.throttle),
        "trigger": (
            {"events": list(spec.trigger.events), "where": _dump_conditions(spec.trigger.where)}
            if spec.trigger
            else None
        ),
        "control_share_bp": spec.control_share_bp,
        "test_share_bp": spec.test_share_bp,
        "budget_fen": spec.budget_fen,
        "stock_cap": spec.stock_cap,
    }


def spec_of(row: Mapping[str, Any]) -> CampaignSpec:
    """The spec back from stored column values (they were validated when saved)."""
    raw = dict(row)
    raw.pop("control_share", None)
    raw.pop("test_share", None)
    return parse_spec(raw)


def variant_for(variants: Sequence[Variant], profile: Mapping[str, Any]) -> Variant | None:
    """The first variant whose conditions all hold (no conditions: matches everyone)."""
    for v in variants:
        if all(c.holds(profile) for c in v.match):
            return v
    return None


# What a coupon costs is paid when it is redeemed, not when the message goes out. Before a
# campaign has evidence of its own, an offer is taken up by one contact in ten: a Beta(1, 9) prior
# worth ten contacts, which the campaign's own take-up soon outweighs.
TAKE_UP_PRIOR = (1, 9)


def take_up_estimate(*, sent: int, taken: int) -> float:
    """The share of contacts expected to take the offer up: the prior and the campaign's own."""
    a, b = TAKE_UP_PRIOR
    return (taken + a) / (sent + a + b)


def budget_room(*, budget_fen: int, cost_fen: int, sent: int, taken: int) -> int:
    """How many more target contacts the budget pays for, charging each coupon at redemption.

    Spent: the offers taken up, at their cost. Committed: every contact sent that has not taken
    the offer up yet may still, at the estimated take-up. The rest of the budget pays for new
    contacts at the same expected cost each.
    """
    if cost_fen <= 0:
        raise ValueError("an offer that costs nothing needs no budget room")
    p = take_up_estimate(sent=sent, taken=taken)
    left = budget_fen - taken * cost_fen - max(sent - taken, 0) * cost_fen * p
    return max(0, math.floor(left / (cost_fen * p)))


def has_cap(spec: CampaignSpec) -> bool:
    """A stock cap or a budget limits this campaign's target contacts."""
    return spec.stock_cap is not None or (spec.budget_fen is not None and spec.offer.cost_fen > 0)


def send_room(spec: CampaignSpec, *, sent: int, taken: int) -> int | None:
    """How many more target contacts may go out now: the stock left and the budget's room."""
    rooms = []
    if spec.stock_cap is not None:
        rooms.append(max(spec.stock_cap - sent, 0))
    if spec.budget_fen is not None and spec.offer.cost_fen > 0:
        rooms.append(
            budget_room(
                budget_fen=spec.budget_fen, cost_fen=spec.offer.cost_fen, sent=sent, taken=taken
            )
        )
    return min(rooms) if rooms else None


def contact_cap(spec: CampaignSpec) -> int | None:
    """At most this many target contacts before any take-up is seen; None without a cap.

    The stock cap, and what the budget pays for at the prior take-up (coupons are paid for when
    redeemed). Dispatch counts the room as it goes (``send_room``).
    """
    return send_room(spec, sent=0, taken=0)


# ---- timing ------------------------------------------------------------------------------------


@cache
def _china_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("CN", years=year).keys())


def is_holiday(day: date) -> bool:
    """A China public holiday (including the days off moved by the State Council)."""
    return day in _china_holidays(day.year)


def _allowed_local(local: datetime, schedule: Schedule) -> bool:
    if local.isoweekday() not in schedule.weekdays:
        return False
    if schedule.skip_holidays and is_holiday(local.date()):
        return False
    if not schedule.slots:
        return True
    t = local.time()
    return any(a <= t < b for a, b in schedule.slots)


def next_allowed(
    at: datetime,
    schedule: Schedule,
    *,
    zone: str,
    quiet: tuple[time, time] | None = None,
    horizon_days: int = 60,
) -> datetime | None:
    """The first moment ≥ `at` the schedule allows and outside quiet hours (local to `zone`).

    None when the schedule has ended or nothing is allowed within the horizon.
    """
    tz = ZoneInfo(zone)
    at = at.astimezone(UTC)
    if schedule.starts_at and at < schedule.starts_at:
        at = schedule.starts_at
    limit = at + timedelta(days=horizon_days)
    # Minute resolution: candidates are `at` itself, then starts of slots, days and quiet ends.
    current = at
    while current < limit:
        if schedule.ends_at and current >= schedule.ends_at:
            return None
        local = current.astimezone(tz)
        quiet_now = quiet is not None and _quiet_covers(quiet, local.time())
        if _allowed_local(local, schedule) and not quiet_now:
            return current
        current = _next_boundary(local, schedule, quiet).astimezone(UTC)
    return None


def _quiet_covers(quiet: tuple[time, time], t: time) -> bool:
    start, end = quiet
    if start <= end:
        return start <= t < end
    return t >= start or t < end


def _next_boundary(
    local: datetime, schedule: Schedule, quiet: tuple[time, time] | None
) -> datetime:
    """The next local moment where the answer may change: a slot start, a quiet end, a midnight."""
    day = local.date()
    tz = local.tzinfo
    candidates = []
    for d in (day, day + timedelta(days=1)):
        points = [a for a, _ in schedule.slots] or [time(0, 0)]
        if quiet is not None:
            points.append(quiet[1])
        for p in points:
            c = datetime.combine(d, p, tzinfo=tz)
            if c > local:
                candidates.append(c)
    midnight = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=tz)
    candidates.append(midnight)
    return min(candidates)
