"""The campaign spec: its vocabulary, its model (goal, offer, variants, schedule), stored form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from perkflow.errors import Problem

from .vocabulary import CampaignKind

GOAL_KINDS = ("claim", "redemption", "grant_use", "order", "any")
RESPONSE_KINDS = ("claim", "redemption", "grant_use", "order")
OFFER_KINDS = ("coupon_batch", "benefit", "none")
# The campaign's channels; the audience's contact policy calls a webhook push "push".
CAMPAIGN_CHANNELS = ("sms", "email", "webhook", "in_app")
POLICY_CHANNEL = {"sms": "sms", "email": "email", "webhook": "push", "in_app": "in_app"}
EVENT_TYPES = ("data_threshold", "contract_expiring", "recharge", "plan_change", "arrears")
MATCH_OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "not_in")
# A message's language: region fields are filled with names in it. Without one, zh_CN.
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
BASIS_POINTS = 10_000


class InvalidSpec(ValueError):
    """A spec with problems; the first names the field of the 422."""

    def __init__(self, problems: Sequence[Problem]) -> None:
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


def variant_for(variants: Sequence[Variant], profile: Mapping[str, Any]) -> Variant | None:
    """The first variant whose conditions all hold (no conditions: matches everyone)."""
    for v in variants:
        if all(c.holds(profile) for c in v.match):
            return v
    return None


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
